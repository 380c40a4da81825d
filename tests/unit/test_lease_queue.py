"""LeaseQueue against the seed algorithm, over random workloads (hypothesis)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.queue import LeaseQueue, Level, QueueFullError, Waiter

MODELS = ["a", "b", "c"]


def seed_algorithm_next(waiting: list[Waiter], resident: set[str]) -> Waiter | None:
    """The seed design, plainly: level 0 FIFO; level 1 resident models first, then FIFO; level 2 FIFO."""
    if not waiting:
        return None
    return min(waiting, key=lambda w: (w.level, w.level == Level.NORMAL and w.model not in resident, w.seq))


operation = st.one_of(
    st.tuples(st.just("push"), st.sampled_from(list(Level)), st.sampled_from(MODELS)),
    st.tuples(st.just("pop"), st.sets(st.sampled_from(MODELS))),
    st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=50)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=60))
def test_queue_serves_in_seed_algorithm_order(operations: list[tuple]) -> None:
    queue = LeaseQueue(max_per_level=1000)
    waiting: list[Waiter] = []
    for op in operations:
        if op[0] == "push":
            waiter = Waiter(f"r{len(waiting)}", op[2], op[1], "svc", 0.0)
            queue.push(waiter)
            waiting.append(waiter)
        elif op[0] == "pop":
            resident = op[1]
            expected = seed_algorithm_next(waiting, resident)
            assert queue.peek(resident) is expected
            assert queue.ordered(resident)[:1] == ([expected] if expected else [])
            if expected is not None:
                assert queue.remove(expected)
                waiting.remove(expected)
        elif waiting:
            victim = waiting.pop(op[1] % len(waiting))
            assert queue.remove(victim)
            assert not queue.remove(victim)
        assert len(queue) == len(waiting)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(list(Level)), st.sampled_from(MODELS)), min_size=1, max_size=40),
    st.sets(st.sampled_from(MODELS)),
)
def test_ordered_is_the_sequence_of_successive_peeks(
    pushes: list[tuple[Level, str]], resident: set[str]
) -> None:
    queue = LeaseQueue(max_per_level=1000)
    for i, (level, model) in enumerate(pushes):
        queue.push(Waiter(f"r{i}", model, level, "svc", 0.0))
    ordered = queue.ordered(resident)
    popped = []
    while (head := queue.peek(resident)) is not None:
        popped.append(head)
        queue.remove(head)
    assert popped == ordered


def test_urgent_request_is_next_even_behind_a_full_background_level() -> None:
    queue = LeaseQueue(max_per_level=4)
    for i in range(4):
        queue.push(Waiter(f"bg{i}", "a", Level.BACKGROUND, "svc", 0.0))
    with pytest.raises(QueueFullError):
        queue.push(Waiter("bg-overflow", "a", Level.BACKGROUND, "svc", 0.0))
    urgent = Waiter("urgent", "b", Level.URGENT, "svc", 0.0)
    queue.push(urgent)
    assert queue.peek({"a"}) is urgent
