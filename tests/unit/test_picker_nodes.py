"""The picker's node set: a node is ready once its scheduler's watch speaks, its picks count until the
status lists them, and a DNS name's addresses become the nodes."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from multai.mesh_tls import MeshChannels, ensure_mesh_certs, server_credentials
from multai.scheduler.v1 import scheduler_pb2_grpc
from picker.nodes import NodeSet
from scheduler.arbiter import LeaseArbiter
from scheduler.memory import DeviceKind, Footprint, MemoryPlanner
from scheduler.queue import LeaseQueue, Level
from scheduler.servicer import SchedulerServicer
from tests.unit.fakes import MB, FakeProbe


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


@pytest.fixture
async def scheduler(tmp_path: Path) -> AsyncIterator[tuple[LeaseArbiter, str, MeshChannels]]:
    certs = tmp_path / "certs"
    ensure_mesh_certs(certs)
    planner = MemoryPlanner(FakeProbe(None, 1000 * MB), {DeviceKind.CPU: 1, DeviceKind.GPU: 1})
    arbiter = LeaseArbiter(planner, LeaseQueue(max_per_level=8))
    server = grpc.aio.server()
    scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(SchedulerServicer(arbiter), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(certs))
    await server.start()
    yield arbiter, f"127.0.0.1:{port}", MeshChannels(certs)
    await server.stop(None)


async def test_a_pick_counts_until_the_nodes_status_lists_the_request(
    scheduler: tuple[LeaseArbiter, str, MeshChannels],
) -> None:
    arbiter, address, channels = scheduler
    changes: list[bool] = []
    nodes = NodeSet(channels, lambda: changes.append(nodes.any_ready()))
    nodes.set_nodes([("10.0.0.1:8081", address)])
    await until(nodes.any_ready)
    service = arbiter.register("chat", 1, {"m": Footprint(100 * MB, slots=4)}, {})
    nodes.picked("10.0.0.1:8081", "m", "req-7")
    (view,) = nodes.views(claim_seconds=30)
    assert view.pending["m"] == 1
    # The request reaches the scheduler: from then on its status counts it, not the pick.
    waiter = arbiter.enqueue(service.service_id, "req-7", "m", Level.NORMAL)
    await until(lambda: nodes.views(claim_seconds=30)[0].pending["m"] == 0)
    assert [lease.request_id for lease in nodes.views(30)[0].status.leases] == ["req-7"]
    arbiter.leave(waiter, await arbiter.grant_of(waiter))
    # A pick whose request never shows is forgotten after the claim time.
    nodes.picked("10.0.0.1:8081", "m", "req-lost")
    assert nodes.views(claim_seconds=0)[0].pending["m"] == 0
    await nodes.close()
    assert changes[-1] is True


async def test_a_node_whose_scheduler_is_gone_is_not_ready(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    ensure_mesh_certs(certs)
    nodes = NodeSet(MeshChannels(certs), lambda: None)
    nodes.set_nodes([("10.0.0.1:8081", "127.0.0.1:9")])
    await asyncio.sleep(0.3)
    assert not nodes.any_ready() and nodes.views(3) == []
    await nodes.close()


async def test_a_dns_names_addresses_become_the_nodes(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    ensure_mesh_certs(certs)
    nodes = NodeSet(MeshChannels(certs), lambda: None)
    follow = asyncio.create_task(nodes.follow_dns("localhost", 8081, 50050, every=0.05))
    await until(lambda: "127.0.0.1:8081" in nodes.nodes)
    assert nodes.nodes["127.0.0.1:8081"].scheduler == "127.0.0.1:50050"
    follow.cancel()
    await nodes.close()
