"""Invariants of the arbiter over random workloads on a fake 24 GB GPU, with batching models (hypothesis)."""

import asyncio
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.arbiter import Lease, LeaseArbiter, LeaseTerms
from scheduler.memory import DeviceKind, Footprint, MemoryPlanner
from scheduler.queue import LeaseQueue, Level, Waiter
from tests.unit.fakes import GB, FakeProbe

GPU_BYTES = 24 * GB
RAM_BYTES = 64 * GB
MAX_GPU_LEASES = 1


@dataclass
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """An arbiter and the service side of it: holders that release, and unloads that get acknowledged."""

    clock: FakeClock
    arbiter: LeaseArbiter
    service_id: str
    waiting: list[Waiter] = field(default_factory=list)
    held: list[tuple[Waiter, Lease]] = field(default_factory=list)

    @classmethod
    def build(
        cls, models: dict[str, Footprint], aging_seconds: float, ram_bytes: int = RAM_BYTES
    ) -> "Harness":
        clock = FakeClock()
        planner = MemoryPlanner(
            FakeProbe(GPU_BYTES, ram_bytes), {DeviceKind.GPU: MAX_GPU_LEASES, DeviceKind.CPU: 2}
        )
        queue = LeaseQueue(max_per_level=10_000, aging_seconds=aging_seconds, clock=clock)
        arbiter = LeaseArbiter(planner, queue, LeaseTerms(ttl_seconds=1e6, max_seconds=1e6), clock=clock)
        service = arbiter.register("svc", 1, dict(models), {})
        return cls(clock, arbiter, service.service_id)

    def claim(self, model: str, level: Level) -> None:
        self.waiting.append(self.arbiter.enqueue(self.service_id, f"r{len(self.waiting)}", model, level))

    def settle(self) -> list[Waiter]:
        """Acknowledges every unload asked for, then collects the new grants; returns who was granted."""
        service = self.arbiter.services[self.service_id]
        while not service.unload_commands.empty():
            self.arbiter.model_evicted(service.unload_commands.get_nowait())
        granted = []
        for waiter in list(self.waiting):
            future = self.arbiter._grants[waiter]
            if future.done():
                self.waiting.remove(waiter)
                if future.exception() is None:
                    self.held.append((waiter, future.result()))
                    granted.append(waiter)
                else:
                    self.arbiter.leave(waiter, None)
        return granted

    def release(self, index: int) -> None:
        waiter, lease = self.held.pop(index % len(self.held))
        self.arbiter.leave(waiter, lease)

    def check_invariants(self, granted_now: list[Waiter]) -> None:
        arbiter, planner = self.arbiter, self.arbiter.planner
        for kind, budget in ((DeviceKind.GPU, GPU_BYTES), (DeviceKind.CPU, RAM_BYTES)):
            assert planner.used_bytes(kind, arbiter.resident) <= budget, f"{kind} over-committed"
        # A device runs one batch at a time (one model), and no batch has more leases than slots.
        gpu_models = {lease.model for lease in arbiter.leases.values() if lease.device is DeviceKind.GPU}
        assert len(gpu_models) <= MAX_GPU_LEASES
        footprints = arbiter.services[self.service_id].footprints
        for model in {lease.model for lease in arbiter.leases.values()}:
            holders = sum(1 for lease in arbiter.leases.values() if lease.model == model)
            assert holders <= footprints[model].slots, f"{model} over its slots"
        now = self.clock.now
        for granted in granted_now:
            level = arbiter.queue.effective_level(granted, now)
            # No waiter for another model is more urgent than a grant, batch joins included.
            others = [w for w in self.waiting if w.model != granted.model]
            assert all(arbiter.queue.effective_level(w, now) >= level for w in others), "level order"


MODEL_SIZES = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e"]),
    st.builds(
        Footprint,
        st.integers(1, 30).map(lambda g: g * GB),
        st.sampled_from([0, 24, 80]),
        st.sampled_from([1, 1, 2, 4]),
    ),
    min_size=2,
    max_size=5,
)
OPERATION = st.one_of(
    st.tuples(st.just("claim"), st.integers(0, 4), st.sampled_from(list(Level))),
    st.tuples(st.just("release"), st.integers(0, 100)),
    st.tuples(st.just("tick"), st.floats(0.1, 5.0)),
)


@settings(max_examples=200, deadline=None)
@given(MODEL_SIZES, st.lists(OPERATION, max_size=80))
def test_memory_leases_and_order_invariants_hold(
    models: dict[str, Footprint], operations: list[tuple]
) -> None:
    async def scenario() -> None:
        harness = Harness.build(models, aging_seconds=10.0)
        names = sorted(models)
        for op in operations:
            if op[0] == "claim":
                harness.claim(names[op[1] % len(names)], op[2])
            elif op[0] == "release" and harness.held:
                harness.release(op[1])
            elif op[0] == "tick":
                harness.clock.now += op[1]
            harness.check_invariants(harness.settle())

    asyncio.run(scenario())


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(0, 6), st.integers(1, 3), st.sampled_from([1, 4]))
def test_aging_grants_a_background_waiter_within_the_bound(
    aging: int, backlog: int, flood_per_tick: int, slots: int
) -> None:
    """Urgent requests flood in every tick, one lease is granted and released per tick; the background
    waiter still gets its turn within 2 x aging plus the backlog that arrived before it, also when the
    model batches (its free slots take the flood first)."""

    async def scenario() -> None:
        harness = Harness.build({"m": Footprint(GB, slots=slots)}, aging_seconds=float(aging))
        harness.claim("m", Level.URGENT)  # the current holder
        harness.settle()
        for _ in range(backlog):
            harness.claim("m", Level.URGENT)
        harness.claim("m", Level.BACKGROUND)
        background = harness.waiting[-1]
        ahead = len(harness.waiting) - 1
        for tick in range(1, 2 * aging + ahead + 3):
            harness.clock.now = float(tick)
            for _ in range(flood_per_tick):
                harness.claim("m", Level.URGENT)
            harness.release(0)
            if background in harness.settle():
                assert tick <= 2 * aging + ahead + 1
                return
        raise AssertionError("the background waiter starved")

    asyncio.run(scenario())


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(0, 6),
    st.sampled_from([Level.NORMAL, Level.BACKGROUND]),
    st.booleans(),
    st.lists(st.integers(0, 100), max_size=8),
)
def test_urgent_request_for_another_model_waits_only_for_the_streams_in_flight(
    slots: int, queued: int, queued_level: Level, both_fit: bool, release_order: list[int]
) -> None:
    """Model A runs a full batch with A requests queued behind it; an urgent claim for B is granted as soon
    as A's in-flight leases end, before any queued A request, whether B fits beside A or A must go."""

    async def scenario() -> None:
        size_b = 10 * GB if both_fit else 20 * GB
        harness = Harness.build(
            {"a": Footprint(10 * GB, slots=slots), "b": Footprint(size_b, slots=slots)},
            aging_seconds=1e9,
            ram_bytes=0,  # one device, so that A and B contend for it
        )
        for _ in range(slots):
            harness.claim("a", Level.NORMAL)
        assert len(harness.settle()) == slots  # one full batch
        for _ in range(queued):
            harness.claim("a", queued_level)
        harness.claim("b", Level.URGENT)
        urgent = harness.waiting[-1]
        queued_a = [w for w in harness.waiting if w.model == "a"]
        in_flight = list(harness.held)
        for pick in [*release_order, *range(slots)]:
            if harness.held:
                harness.release(pick)
            harness.settle()
            tokens = {w: lease.fencing_token for w, lease in harness.held}
            if urgent in tokens:
                assert not any(pair in harness.held for pair in in_flight), "B was granted while A still ran"
                # Queued A requests may run beside B (on another device), but only once B has its grant.
                assert all(tokens[w] > tokens[urgent] for w in queued_a if w in tokens), "A went before B"
                return
            assert not any(w in tokens for w in queued_a), "a queued A request went before the urgent B"
        raise AssertionError("the urgent request was not granted after A's batch drained")

    asyncio.run(scenario())
