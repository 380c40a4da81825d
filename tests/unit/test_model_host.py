"""ModelHost: the engine thread outlives no lease; the footprints it announces; adapters on their base."""

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import pytest

from multai.common.v1 import common_pb2
from multai.mesh_tls import MeshChannels
from multai.model_host import ModelHost
from multai.registry import ModelManifest, ModelRegistry
from multai.scheduler.v1 import scheduler_pb2
from multai.scheduler_client import Grant, ResidentReport, SchedulerClient


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


class GrantingScheduler(RecordingScheduler):
    """Grants every lease at once on the CPU and records what the host reports."""

    def __init__(self) -> None:
        super().__init__()
        self.resident: list[str] = []

    @asynccontextmanager
    async def lease(self, request_id: str, model: str, priority: object, wait: float) -> AsyncIterator[Grant]:
        yield Grant("l", 1, common_pb2.DEVICE_CPU, -1, 30.0)

    def report_resident(self, report: ResidentReport) -> None:
        self.resident.append(report.model)


class FakeBase:
    """A batching base model that records what is loaded onto it."""

    slots = 4

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def estimated_bytes(self) -> int:
        return 1000

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        self.loaded.append("base")
        return 1000

    def unload(self) -> None:
        self.loaded.clear()

    def adapter_backend(self, manifest: ModelManifest) -> "FakeAdapter":
        return FakeAdapter(self, manifest.id)


class FakeAdapter:
    slots = 4

    def __init__(self, base: FakeBase, name: str) -> None:
        self.base, self.name = base, name

    def estimated_bytes(self) -> int:
        return 10

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        assert "base" in self.base.loaded, "an adapter is loaded onto a loaded base"
        self.base.loaded.append(self.name)
        return 10

    def unload(self) -> None:
        self.base.loaded.remove(self.name)


async def test_an_adapter_is_hosted_on_its_base_and_goes_with_it(tmp_path: Path) -> None:
    one_gguf_model(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.toml").write_text(
        'id = "a"\nmodality = "chat"\nbackend = "llama_cpp_lora"\nbase = "m"\nfiles = ["x.gguf"]\n'
        "size_bytes = 10\n"
    )
    registry = ModelRegistry.scan(tmp_path)
    base = FakeBase()
    scheduler = GrantingScheduler()
    host = ModelHost("test", registry, lambda m: base, scheduler, 1.0)
    await host.start(1.0)
    assert [(f.model, f.size_bytes, f.base) for f in scheduler.footprints] == [
        ("a", 10, "m"),
        ("m", 1000, ""),
    ]

    async with host.leased(registry.resolve("a"), common_pb2.PRIORITY_NORMAL, "r1") as backend:
        assert isinstance(backend, FakeAdapter)
        assert base.loaded == ["base", "a"]
        assert scheduler.resident == ["m", "a"]
    async with host.leased(registry.resolve("m"), common_pb2.PRIORITY_NORMAL, "r2") as backend:
        assert backend is base
    assert base.loaded == ["base", "a"]  # loaded once, for both

    assert await host.unload("m")
    assert host.device_of("a") == common_pb2.DEVICE_UNSPECIFIED
    assert not await host.unload("a")  # it went with its base


class CatalogScheduler(RecordingScheduler):
    """Records each catalog the host announces after the models folder changed."""

    def __init__(self) -> None:
        super().__init__()
        self.catalogs: list[list[tuple[str, int]]] = []
        self.evicted: list[str] = []

    def update_catalog(self, footprints: list[scheduler_pb2.ModelFootprint]) -> None:
        self.catalogs.append([(f.model, f.size_bytes) for f in footprints])

    def report_evicted(self, model: str) -> None:
        self.evicted.append(model)


async def test_models_added_to_or_removed_from_the_folder_are_served_or_dropped_without_a_restart(
    tmp_path: Path,
) -> None:
    scheduler = CatalogScheduler()
    host = ModelHost("test", one_gguf_model(tmp_path), lambda m: SlotsBackend(7000), scheduler, 1.0)
    await host.start(1.0)
    follow = asyncio.create_task(host.follow_models_dir(tmp_path, ("chat",), every=0.05))
    shutil.copytree(tmp_path / "m", tmp_path / "n")
    manifest = tmp_path / "n" / "model.toml"
    manifest.write_text(manifest.read_text().replace('id = "m"', 'id = "n"'))
    for _ in range(100):
        if scheduler.catalogs:
            break
        await asyncio.sleep(0.05)
    # The new model is announced with its estimated size, and requests can name it.
    assert scheduler.catalogs == [[("m", 7000), ("n", 7000)]]
    assert host.registry.resolve("n").id == "n"
    shutil.rmtree(tmp_path / "m")
    for _ in range(100):
        if len(scheduler.catalogs) == 2:
            break
        await asyncio.sleep(0.05)
    assert scheduler.catalogs[-1] == [("n", 7000)]
    assert [m.id for m in host.registry.models()] == ["n"]
    assert scheduler.evicted == []  # it was not loaded
    follow.cancel()
