"""LeaseArbiter: grants, evictions, expiry and a vanished service, with fake devices."""

import asyncio

import pytest

from multai.errors import ModelNotFoundError, ResourceExhaustedError
from scheduler.arbiter import LeaseArbiter, LeaseTerms
from scheduler.memory import DeviceKind, Footprint, MemoryPlanner
from scheduler.queue import LeaseQueue, Level
from tests.unit.fakes import MB, FakeProbe


def arbiter(ram_mb: int, terms: LeaseTerms | None = None) -> LeaseArbiter:
    planner = MemoryPlanner(FakeProbe(None, ram_mb * MB), {DeviceKind.CPU: 1, DeviceKind.GPU: 1})
    return LeaseArbiter(planner, LeaseQueue(max_per_level=8), terms or LeaseTerms())


async def test_vanished_holder_frees_its_lease_for_the_next_waiter() -> None:
    a = arbiter(1000)
    crashed = a.register("chat", 1, {"m": Footprint(100 * MB)}, {})
    healthy = a.register("chat", 2, {"m": Footprint(100 * MB)}, {})
    lease = await a.grant_of(a.enqueue(crashed.service_id, "r1", "m", Level.NORMAL))
    second = a.enqueue(healthy.service_id, "r2", "m", Level.NORMAL)
    waiting = asyncio.ensure_future(a.grant_of(second))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # one CPU lease at a time

    a.unregister(crashed.service_id)
    assert lease.revoked.is_set()
    assert (await asyncio.wait_for(waiting, 1)).request_id == "r2"


async def test_model_that_does_not_fit_evicts_idle_one_after_unload_ack() -> None:
    a = arbiter(300)
    service = a.register("chat", 1, {"small": Footprint(100 * MB), "big": Footprint(250 * MB)}, {})
    waiter = a.enqueue(service.service_id, "r1", "small", Level.NORMAL)
    a.leave(waiter, await a.grant_of(waiter))

    big = asyncio.ensure_future(a.grant_of(a.enqueue(service.service_id, "r2", "big", Level.NORMAL)))
    assert service.unload_commands.get_nowait() == "small"
    await asyncio.sleep(0.01)
    assert not big.done()
    a.model_evicted("small")
    assert (await asyncio.wait_for(big, 1)).model == "big"
    assert a.total_evictions == 1


async def test_model_larger_than_memory_is_refused() -> None:
    a = arbiter(100)
    service = a.register("chat", 1, {"huge": Footprint(500 * MB)}, {})
    waiter = a.enqueue(service.service_id, "r1", "huge", Level.URGENT)
    with pytest.raises(ResourceExhaustedError, match="400000000 bytes missing"):
        await a.grant_of(waiter)


async def test_unrenewed_lease_expires_and_renewal_stops_at_the_hard_deadline() -> None:
    a = arbiter(1000, LeaseTerms(ttl_seconds=0.2, max_seconds=0.5))
    service = a.register("chat", 1, {"m": Footprint(10 * MB)}, {})
    lease = await a.grant_of(a.enqueue(service.service_id, "r1", "m", Level.NORMAL))
    await asyncio.sleep(0.1)
    assert 0.15 < a.renew(lease) <= 0.2
    await asyncio.sleep(0.15)
    assert not lease.revoked.is_set()  # the renewal moved the deadline
    await asyncio.wait_for(lease.revoked.wait(), 1)
    assert lease.revoke_reason == "expired"
    assert a.leases == {}
    assert a.metrics.expirations._value.get() == 1


async def test_queue_full_is_resource_exhausted() -> None:
    planner = MemoryPlanner(FakeProbe(None, 10**9), {DeviceKind.CPU: 1, DeviceKind.GPU: 1})
    a = LeaseArbiter(planner, LeaseQueue(max_per_level=1))
    service = a.register("chat", 1, {"m": Footprint(MB)}, {})
    await a.grant_of(a.enqueue(service.service_id, "holder", "m", Level.NORMAL))
    a.enqueue(service.service_id, "waiting", "m", Level.NORMAL)
    with pytest.raises(ResourceExhaustedError, match="full"):
        a.enqueue(service.service_id, "overflow", "m", Level.NORMAL)
    a.enqueue(service.service_id, "urgent", "m", Level.URGENT)  # other levels have their own bound


async def test_fencing_tokens_increase_within_and_across_scheduler_instances() -> None:
    first = arbiter(1000)
    service = first.register("chat", 1, {"m": Footprint(MB)}, {})
    tokens = []
    for i in range(3):
        waiter = first.enqueue(service.service_id, f"r{i}", "m", Level.NORMAL)
        lease = await first.grant_of(waiter)
        tokens.append(lease.fencing_token)
        first.leave(waiter, lease)
    assert tokens == sorted(tokens) and len(set(tokens)) == 3 and tokens[0] >= first.fencing_floor
    restarted = arbiter(1000)
    assert restarted.fencing_floor > tokens[-1]


async def test_measured_footprint_replaces_the_manifest_estimate() -> None:
    a = arbiter(1000)
    service = a.register("chat", 1, {"m": Footprint(100 * MB, n_layers=30)}, {})
    waiter = a.enqueue(service.service_id, "r1", "m", Level.NORMAL)
    lease = await a.grant_of(waiter)
    a.model_resident(service.service_id, "m", DeviceKind.CPU, 240 * MB, load_seconds=0.3)
    a.leave(waiter, lease)
    assert a.resident["m"].size_bytes == 240 * MB
    assert service.footprints["m"] == Footprint(240 * MB, n_layers=30)
    assert a.planner.used_bytes(DeviceKind.CPU, a.resident) == 240 * MB


async def test_a_new_catalog_adds_models_and_refuses_waiters_for_removed_ones() -> None:
    a = arbiter(150)
    service = a.register("chat", 1, {"old": Footprint(100 * MB), "busy": Footprint(100 * MB)}, {})
    holder = a.enqueue(service.service_id, "r1", "busy", Level.NORMAL)
    lease = await a.grant_of(holder)
    waiting = a.enqueue(service.service_id, "r2", "old", Level.NORMAL)
    a.update_catalog(service.service_id, {"busy": Footprint(100 * MB), "new": Footprint(10 * MB)}, {})
    with pytest.raises(ModelNotFoundError):
        await a.grant_of(waiting)
    a.leave(holder, lease)
    added = a.enqueue(service.service_id, "r3", "new", Level.NORMAL)
    assert (await asyncio.wait_for(a.grant_of(added), 1)).model == "new"
