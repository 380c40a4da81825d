"""ModelHost: the engine thread outlives no lease; the footprints it announces."""

import asyncio
import threading
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import pytest

from multai.mesh_tls import MeshChannels
from multai.model_host import ModelHost
from multai.registry import ModelRegistry
from multai.scheduler.v1 import scheduler_pb2
from multai.scheduler_client import SchedulerClient


def make_host(folder: Path) -> ModelHost:
    # No models and no scheduler connection: stream() needs neither.
    return ModelHost(
        "test",
        ModelRegistry.scan(folder),
        lambda manifest: None,
        SchedulerClient("127.0.0.1:9", "test", MeshChannels(None)),
        1.0,
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


class RecordingScheduler(SchedulerClient):
    """Keeps what the host registers instead of sending it."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:9", "test", MeshChannels(None))
        self.footprints: list[scheduler_pb2.ModelFootprint] = []

    async def start(
        self, timeout: float, footprints: list[scheduler_pb2.ModelFootprint], *args: object
    ) -> None:
        self.footprints = footprints


class SlotsBackend:
    """A batching backend whose size before loading is `estimate` (or unreadable)."""

    slots = 4

    def __init__(self, estimate: int | None) -> None:
        self._estimate = estimate

    def estimated_bytes(self) -> int:
        if self._estimate is None:
            raise OSError("unreadable file")
        return self._estimate

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        raise AssertionError("not loaded here")

    def unload(self) -> None:
        pass


def one_gguf_model(folder: Path) -> ModelRegistry:
    (folder / "m").mkdir()
    (folder / "m" / "model.gguf").write_bytes(b"GGUF")
    (folder / "m" / "model.toml").write_text(
        'id = "m"\nmodality = "chat"\nbackend = "llama_cpp"\nfiles = ["model.gguf"]\nsize_bytes = 1000\n'
    )
    return ModelRegistry.scan(folder)


@pytest.mark.parametrize(("estimate", "announced"), [(5000, 5000), (None, 1000)])
async def test_the_footprint_holds_the_estimate_before_the_first_load(
    tmp_path: Path, estimate: int | None, announced: int
) -> None:
    scheduler = RecordingScheduler()
    host = ModelHost("test", one_gguf_model(tmp_path), lambda m: SlotsBackend(estimate), scheduler, 1.0)
    await host.start(1.0)
    # An unreadable file keeps the manifest's size and fails at its own load, not the service's start.
    assert [(f.model, f.size_bytes, f.slots) for f in scheduler.footprints] == [("m", announced, 4)]
