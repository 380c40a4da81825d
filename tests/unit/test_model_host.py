"""ModelHost.stream: the engine thread outlives no lease."""

import asyncio
import threading
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import pytest

from multai.model_host import ModelHost
from multai.registry import ModelRegistry
from multai.scheduler_client import SchedulerClient


def make_host(folder: Path) -> ModelHost:
    # No models and no scheduler connection: stream() needs neither.
    return ModelHost(
        "test", ModelRegistry.scan(folder), lambda manifest: None, SchedulerClient("127.0.0.1:9", "test"), 1.0
    )


async def test_a_second_cancellation_still_waits_for_the_engine_thread(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    step_may_end = threading.Event()
    engine_finished = threading.Event()

    def produce(cancel: threading.Event) -> Iterator[int]:
        yield 1
        # An engine step that cannot look at `cancel` until it returns.
        step_may_end.wait(10)
        engine_finished.set()
        yield 2

    async def consume() -> None:
        async with aclosing(host.stream(produce)) as items:
            async for _ in items:
                await asyncio.sleep(30)

    holder = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    # The client goes away, then the lost lease cancels the holder once more.
    holder.cancel()
    await asyncio.sleep(0.1)
    holder.cancel()
    await asyncio.sleep(0.3)
    assert not holder.done(), "the holder let go while the engine thread was still running"

    step_may_end.set()
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert engine_finished.is_set()
