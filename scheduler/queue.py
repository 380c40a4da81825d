"""LeaseQueue: the waiting room of the scheduler, with the seed design's three priority levels and aging."""

import itertools
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import IntEnum


class Level(IntEnum):
    """Queue levels; lower is served first."""

    URGENT = 0
    NORMAL = 1
    BACKGROUND = 2


_arrivals = itertools.count()


@dataclass(eq=False)
class Waiter:
    """One request waiting for a lease."""

    request_id: str
    model: str
    level: Level
    service_id: str
    enqueued_at: float
    # Arrival order; ties within a level are broken by it.
    seq: int = field(default_factory=lambda: next(_arrivals))


class QueueFullError(Exception):
    """The level a waiter asked for already holds its maximum number of waiters."""


class LeaseQueue:
    """Orders waiters by the seed algorithm over their *effective* level.

    Level 0 in arrival order; level 1 requests for a resident model first, then arrival order; level 2 in
    arrival order. Aging lifts a waiter one level for every `aging_seconds` it has waited, so a steady
    flood at a higher level delays a waiter by at most 2 x aging_seconds plus the waiters that came before it.
    """

    def __init__(
        self,
        max_per_level: int,
        aging_seconds: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_per_level = max_per_level
        self._aging_seconds = aging_seconds
        self._clock = clock
        self._levels: dict[Level, list[Waiter]] = {level: [] for level in Level}

    def __len__(self) -> int:
        return sum(len(waiters) for waiters in self._levels.values())

    def count(self, level: Level) -> int:
        """Waiters that asked for this level (bounded by max_per_level)."""
        return len(self._levels[level])

    def push(self, waiter: Waiter) -> None:
        """Adds a waiter at the back of its level; QueueFullError when that level is full."""
        waiters = self._levels[waiter.level]
        if len(waiters) >= self._max_per_level:
            raise QueueFullError(f"queue level {int(waiter.level)} is full ({self._max_per_level} waiting)")
        waiters.append(waiter)

    def remove(self, waiter: Waiter) -> bool:
        """Takes a waiter out (granted or cancelled); False if it was not queued."""
        waiters = self._levels[waiter.level]
        try:
            waiters.remove(waiter)
        except ValueError:
            return False
        return True

    def effective_level(self, waiter: Waiter, now: float) -> Level:
        """The waiter's level after aging."""
        if math.isinf(self._aging_seconds):
            return waiter.level
        lifted = int((now - waiter.enqueued_at) // self._aging_seconds)
        return Level(max(0, int(waiter.level) - lifted))

    def peek(self, resident_models: Collection[str]) -> Waiter | None:
        """The waiter to serve next, given the models resident now; None when empty."""
        ordered = self.ordered(resident_models)
        return ordered[0] if ordered else None

    def ordered(self, resident_models: Collection[str]) -> list[Waiter]:
        """All waiters in the order they would be served if nothing changed."""
        now = self._clock()

        def rank(waiter: Waiter) -> tuple[int, bool, int]:
            level = self.effective_level(waiter, now)
            cold = level is Level.NORMAL and waiter.model not in resident_models
            return int(level), cold, waiter.seq

        return sorted((w for waiters in self._levels.values() for w in waiters), key=rank)
