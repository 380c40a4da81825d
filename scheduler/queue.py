"""LeaseQueue: the waiting room of the scheduler, with the seed design's three priority levels."""

import itertools
from collections.abc import Collection
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
    """Orders waiters: level 0 FIFO; level 1 requests for a resident model first, then FIFO; level 2 FIFO."""

    def __init__(self, max_per_level: int) -> None:
        self._max_per_level = max_per_level
        self._levels: dict[Level, list[Waiter]] = {level: [] for level in Level}

    def __len__(self) -> int:
        return sum(len(waiters) for waiters in self._levels.values())

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

    def peek(self, resident_models: Collection[str]) -> Waiter | None:
        """The waiter to serve next, given the models resident now; None when empty."""
        for level in Level:
            waiters = self._levels[level]
            if not waiters:
                continue
            if level is Level.NORMAL:
                for waiter in waiters:
                    if waiter.model in resident_models:
                        return waiter
            return waiters[0]
        return None

    def ordered(self, resident_models: Collection[str]) -> list[Waiter]:
        """All waiters in the order they would be served if nothing changed."""
        result = []
        for level in Level:
            waiters = self._levels[level]
            if level is Level.NORMAL:
                warm = [w for w in waiters if w.model in resident_models]
                result.extend(warm + [w for w in waiters if w.model not in resident_models])
            else:
                result.extend(waiters)
        return result
