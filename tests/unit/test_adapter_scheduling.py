"""LoRA adapters in the scheduler: placed with their base, sharing its batch, evicted before whole models."""

import asyncio

from scheduler.arbiter import LeaseArbiter
from scheduler.memory import DeviceKind, Footprint, MemoryPlanner
from scheduler.queue import LeaseQueue, Level
from tests.unit.fakes import MB, FakeProbe

BASE = Footprint(100 * MB, n_layers=30, slots=4)
ADAPTER = Footprint(5 * MB, slots=4, base="base")


def arbiter(ram_mb: int) -> LeaseArbiter:
    planner = MemoryPlanner(FakeProbe(None, ram_mb * MB), {DeviceKind.CPU: 1, DeviceKind.GPU: 1})
    return LeaseArbiter(planner, LeaseQueue(max_per_level=8))


async def test_adapter_loads_its_base_once_and_counts_its_own_bytes() -> None:
    a = arbiter(1000)
    service = a.register("chat", 1, {"base": BASE, "lora": ADAPTER, "lora2": ADAPTER}, {})
    held = []
    for request, model in (("r1", "lora"), ("r2", "base"), ("r3", "lora2")):
        waiter = a.enqueue(service.service_id, request, model, Level.NORMAL)
        held.append((waiter, await a.grant_of(waiter)))
        if model == "lora":
            assert set(a.resident) == {"base", "lora"}
            assert a.planner.used_bytes(DeviceKind.CPU, a.resident) == 105 * MB
    # The base and a second adapter joined the same batch; the base was not placed again.
    assert set(a.resident) == {"base", "lora", "lora2"}
    assert a.resident["lora"].base == "base"
    assert a.planner.used_bytes(DeviceKind.CPU, a.resident) == 110 * MB
    assert a.resident["base"].active_leases == 3
    assert a.planner.running_batches(DeviceKind.CPU, a.resident) == 1
    assert a.planner.active_leases(DeviceKind.CPU, a.resident) == 3
    for waiter, lease in held:
        a.leave(waiter, lease)
    assert [a.resident[m].active_leases for m in ("base", "lora", "lora2")] == [0, 0, 0]


async def test_adapter_requests_share_the_base_batch_slots() -> None:
    a = arbiter(1000)
    footprints = {"base": Footprint(100 * MB, slots=2), "lora": Footprint(5 * MB, slots=2, base="base")}
    service = a.register("chat", 1, footprints, {})
    await a.grant_of(a.enqueue(service.service_id, "r1", "base", Level.NORMAL))
    await a.grant_of(a.enqueue(service.service_id, "r2", "lora", Level.NORMAL))
    third = asyncio.ensure_future(a.grant_of(a.enqueue(service.service_id, "r3", "lora", Level.NORMAL)))
    await asyncio.sleep(0.01)
    assert not third.done()  # both slots of the base's batch are taken


async def test_idle_adapters_are_unloaded_before_whole_models() -> None:
    a = arbiter(230)
    footprints = {
        "base": BASE,
        "lora": Footprint(20 * MB, slots=4, base="base"),
        "other": Footprint(100 * MB),
        "big": Footprint(30 * MB),
    }
    service = a.register("chat", 1, footprints, {})
    for request, model in (("r1", "other"), ("r2", "lora")):
        waiter = a.enqueue(service.service_id, request, model, Level.NORMAL)
        a.leave(waiter, await a.grant_of(waiter))
    # "other" was used first, so it is the least recently used model, yet the idle adapter goes first.
    big = asyncio.ensure_future(a.grant_of(a.enqueue(service.service_id, "r3", "big", Level.NORMAL)))
    assert service.unload_commands.get_nowait() == "lora"
    assert service.unload_commands.empty()
    a.model_evicted("lora")
    assert (await asyncio.wait_for(big, 1)).model == "big"


async def test_unloading_a_base_frees_its_adapters() -> None:
    a = arbiter(1000)
    service = a.register("chat", 1, {"base": BASE, "lora": ADAPTER}, {})
    waiter = a.enqueue(service.service_id, "r1", "lora", Level.NORMAL)
    a.leave(waiter, await a.grant_of(waiter))
    a.model_evicted("base")
    assert a.resident == {}


async def test_a_loaded_adapter_counts_as_a_loaded_model_at_level_one() -> None:
    a = arbiter(1000)
    footprints = {"base": BASE, "lora": ADAPTER, "busy": Footprint(10 * MB), "cold": Footprint(10 * MB)}
    service = a.register("chat", 1, footprints, {})
    first = a.enqueue(service.service_id, "r1", "lora", Level.NORMAL)
    a.leave(first, await a.grant_of(first))
    busy = a.enqueue(service.service_id, "busy", "busy", Level.NORMAL)
    busy_lease = await a.grant_of(busy)
    # The CPU runs one batch at a time, so both wait; the request for the loaded adapter goes first.
    cold = a.enqueue(service.service_id, "cold", "cold", Level.NORMAL)
    warm = a.enqueue(service.service_id, "warm", "lora", Level.NORMAL)
    assert (a.position(warm), a.position(cold)) == (0, 1)
    a.leave(busy, busy_lease)
    assert (await asyncio.wait_for(a.grant_of(warm), 1)).model == "lora"
    assert not a.grant_of(cold).done()
