"""SchedulerService.WatchStatus over a real grpc.aio server: a snapshot at once, then one per change."""

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from multai.scheduler.v1 import scheduler_pb2 as pb
from multai.scheduler.v1 import scheduler_pb2_grpc
from scheduler import servicer as servicer_module
from scheduler.arbiter import LeaseArbiter
from scheduler.memory import DeviceKind, Footprint, MemoryPlanner
from scheduler.queue import LeaseQueue, Level
from scheduler.servicer import SchedulerServicer
from tests.unit.fakes import MB, FakeProbe


@pytest.fixture
async def watched() -> AsyncIterator[tuple[LeaseArbiter, AsyncIterator[pb.WatchStatusResponse]]]:
    planner = MemoryPlanner(FakeProbe(None, 1000 * MB), {DeviceKind.CPU: 1, DeviceKind.GPU: 1})
    arbiter = LeaseArbiter(planner, LeaseQueue(max_per_level=8))
    server = grpc.aio.server()
    scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(SchedulerServicer(arbiter), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = scheduler_pb2_grpc.SchedulerServiceStub(channel).WatchStatus(pb.WatchStatusRequest())
        yield arbiter, aiter(stream)
    await server.stop(None)


async def next_status(stream: AsyncIterator[pb.WatchStatusResponse]) -> pb.GetStatusResponse:
    return (await asyncio.wait_for(anext(stream), 1.0)).status


async def test_a_watch_hears_each_change_with_the_models_and_their_aliases(
    watched: tuple[LeaseArbiter, AsyncIterator[pb.WatchStatusResponse]],
) -> None:
    arbiter, stream = watched
    assert not (await next_status(stream)).services
    service = arbiter.register("chat", 7, {"m": Footprint(100 * MB, slots=4)}, {}, {"m": ["m-alias"]})
    status = await next_status(stream)
    (footprint,) = status.services[0].models
    assert (footprint.model, list(footprint.aliases), footprint.slots) == ("m", ["m-alias"], 4)
    waiter = arbiter.enqueue(service.service_id, "req-1", "m", Level.NORMAL)
    lease = await arbiter.grant_of(waiter)
    status = await next_status(stream)
    assert [lease.request_id for lease in status.leases] == ["req-1"]
    assert status.resident_models[0].slots_in_use == 1
    arbiter.leave(waiter, lease)
    status = await next_status(stream)
    assert not status.leases and not status.resident_models[0].unloading


async def test_a_quiet_scheduler_still_sends_a_heartbeat(
    watched: tuple[LeaseArbiter, AsyncIterator[pb.WatchStatusResponse]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servicer_module, "WATCH_HEARTBEAT_SECONDS", 0.2)
    _, stream = watched
    await next_status(stream)
    # Nothing changes, yet the watch speaks: a silent one means a hung node.
    await next_status(stream)
    await next_status(stream)


async def test_the_scheduler_exports_its_nodes_totals_as_the_inference_extension_reads_them() -> None:
    planner = MemoryPlanner(FakeProbe(None, 1000 * MB), {DeviceKind.CPU: 1, DeviceKind.GPU: 1})
    arbiter = LeaseArbiter(planner, LeaseQueue(max_per_level=8))
    service = arbiter.register("chat", 7, {"a": Footprint(100 * MB, slots=4), "b": Footprint(800 * MB)}, {})
    first = arbiter.enqueue(service.service_id, "r1", "a", Level.NORMAL)
    await arbiter.grant_of(first)
    # b does not fit beside a, which is busy: it waits.
    arbiter.enqueue(service.service_id, "r2", "b", Level.BACKGROUND)
    registry = arbiter.metrics.registry
    assert registry.get_sample_value("multai:num_requests_running") == 1
    assert registry.get_sample_value("multai:num_requests_waiting") == 1
    assert registry.get_sample_value("multai:kv_cache_usage_perc") == 0.25
    labels = {"running_lora_adapters": "a", "waiting_lora_adapters": "b", "max_lora": "2"}
    assert registry.get_sample_value("multai:lora_requests_info", labels) is not None
