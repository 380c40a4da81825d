"""LeaseArbiter: grants, evictions and a vanished service, with fake devices."""

import asyncio

import pytest

from multai.errors import ResourceExhaustedError
from scheduler.arbiter import LeaseArbiter
from scheduler.memory import DeviceBudget, DeviceKind, MemoryPlanner
from scheduler.queue import LeaseQueue, Level

MB = 10**6


def arbiter(ram_mb: int) -> LeaseArbiter:
    planner = MemoryPlanner(
        [DeviceBudget(DeviceKind.CPU, "cpu", ram_mb * MB)], {DeviceKind.CPU: 1, DeviceKind.GPU: 1}
    )
    return LeaseArbiter(planner, LeaseQueue(max_per_level=8))


async def test_vanished_holder_frees_its_lease_for_the_next_waiter() -> None:
    a = arbiter(1000)
    crashed = a.register("chat", 1, {"m": 100 * MB}, {})
    healthy = a.register("chat", 2, {"m": 100 * MB}, {})
    first = a.enqueue(crashed.service_id, "r1", "m", Level.NORMAL)
    lease = await a.wait_for_grant(first)
    second = a.enqueue(healthy.service_id, "r2", "m", Level.NORMAL)
    await asyncio.sleep(0)
    assert not a._grants[second].done()  # one CPU lease at a time

    a.unregister(crashed.service_id)
    assert lease.revoked.is_set()
    assert (await asyncio.wait_for(a.wait_for_grant(second), 1)).request_id == "r2"


async def test_model_that_does_not_fit_evicts_idle_one_after_unload_ack() -> None:
    a = arbiter(300)
    service = a.register("chat", 1, {"small": 100 * MB, "big": 250 * MB}, {})
    waiter = a.enqueue(service.service_id, "r1", "small", Level.NORMAL)
    a.leave(waiter, await a.wait_for_grant(waiter))

    big = a.enqueue(service.service_id, "r2", "big", Level.NORMAL)
    assert service.unload_commands.get_nowait() == "small"
    assert not a._grants[big].done()
    a.model_evicted("small")
    assert (await asyncio.wait_for(a.wait_for_grant(big), 1)).model == "big"
    assert a.total_evictions == 1


async def test_model_larger_than_memory_is_refused() -> None:
    a = arbiter(100)
    service = a.register("chat", 1, {"huge": 500 * MB}, {})
    waiter = a.enqueue(service.service_id, "r1", "huge", Level.URGENT)
    with pytest.raises(ResourceExhaustedError, match="400000000 bytes missing"):
        await a.wait_for_grant(waiter)
