"""ModelHost: the models one service has loaded, placed and guarded by scheduler leases.

Every modality service uses it the same way: `async with host.leased(manifest, priority, request_id)` waits
for a lease, loads the model where the lease says (once), and yields the backend for one inference.

Each model's engine calls run on one thread of its own: engines built on OpenMP (llama.cpp, CTranslate2) or
on their own pools (torch) give every calling thread its own team of workers, and a pool of callers slowed
them down more with every request. A backend that batches (`slots` > 1) serves its leases side by side.

An adapter (a manifest with a `base`) is hosted on its base model: its backend comes from the base's
backend, a lease for it holds the base loaded as well, and unloading the base unloads its adapters.
"""

import asyncio
import collections
import contextlib
import contextvars
import logging
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from multai.common.v1 import common_pb2
from multai.registry import MANIFEST_NAME, Modality, ModelManifest, ModelRegistry
from multai.scheduler.v1 import scheduler_pb2
from multai.scheduler_client import Grant, ResidentReport, SchedulerClient
from multai.service_metrics import PoolState, ServiceMetrics

log = logging.getLogger(__name__)


class LoadableBackend(Protocol):
    """What the host needs of any backend; modalities add their own inference methods."""

    def load(self, use_gpu: bool, gpu_layers: int) -> int: ...

    def unload(self) -> None: ...


@runtime_checkable
class KvCacheBackend(Protocol):
    """A backend that can tell how much of its KV cache running requests hold."""

    def kv_cache_usage(self) -> float: ...


@runtime_checkable
class BatchingBackend(Protocol):
    """A backend that serves `slots` requests of one model at once."""

    slots: int

    def estimated_bytes(self) -> int:
        """The memory a load will take (weights and every slot's cache), known before loading; blocks."""
        ...


@runtime_checkable
class AdapterHostBackend(Protocol):
    """A backend that serves adapters (LoRA) on its own weights."""

    def adapter_backend(self, manifest: ModelManifest) -> Any:
        """The backend of one of its adapters: load() and unload() add it to and drop it from the model."""
        ...


BackendT = TypeVar("BackendT", bound=LoadableBackend)
ItemT = TypeVar("ItemT")

# The engine thread of the model whose lease the current task holds; engine calls inside a lease run there.
_engine_thread: contextvars.ContextVar[ThreadPoolExecutor | None] = contextvars.ContextVar(
    "engine_thread", default=None
)


def _manifest_times(models_dir: Path) -> dict[str, int]:
    """Each model folder's manifest and when it last changed."""
    if not models_dir.is_dir():
        return {}
    times = {}
    for manifest in models_dir.glob(f"*/{MANIFEST_NAME}"):
        with contextlib.suppress(OSError):  # removed between the listing and the stat
            times[str(manifest)] = manifest.stat().st_mtime_ns
    return times


def slots_of(backend: object) -> int:
    """How many requests a backend serves at once."""
    return max(1, backend.slots) if isinstance(backend, BatchingBackend) else 1


@dataclass
class _HostedModel(Generic[BackendT]):
    """One model's backend; the lock serialises loads, unloads and (unless it batches) inferences."""

    backend: BackendT
    engine_thread: ThreadPoolExecutor
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    device: common_pb2.Device.ValueType = common_pb2.DEVICE_UNSPECIFIED
    measured_bytes: int = 0
    # Leases using a batching backend now; an unload waits for none.
    users: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    # For an adapter: the model it is applied to.
    base: str = ""


class ModelHost(Generic[BackendT]):
    """Loads models on lease grants, unloads them on the scheduler's command, runs engines off the loop."""

    def __init__(
        self,
        service_name: str,
        registry: ModelRegistry,
        make_backend: Callable[[ModelManifest], BackendT],
        scheduler: SchedulerClient,
        lease_wait_seconds: float,
    ) -> None:
        self.registry = registry
        self.scheduler = scheduler
        self.metrics = ServiceMetrics()
        self._make_backend = make_backend
        self._hosted: dict[str, _HostedModel[BackendT]] = {}
        self._host(registry.models())
        self._lease_wait_seconds = lease_wait_seconds
        self._waiting: collections.Counter[str] = collections.Counter()
        self._running: collections.Counter[str] = collections.Counter()
        self.metrics.add_pool_metrics(self.pool_state)
        # Blocking work outside any model's engine (codecs, file reads) runs here, off the event loop.
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"{service_name}-worker")
        self._footprints = [self._footprint_of(m) for m in registry.models()]

    def _host(self, manifests: list[ModelManifest]) -> None:
        """Makes the backends of new models, adapters after the models they run on."""
        for m in sorted(manifests, key=lambda m: m.is_adapter):
            if m.is_adapter:
                base = self._hosted[m.base]
                if not isinstance(base.backend, AdapterHostBackend):
                    raise ValueError(f"model {m.base} serves no adapters, so {m.id} cannot run on it")
                # Its calls are the base model's engine calls.
                self._hosted[m.id] = _HostedModel(
                    base.backend.adapter_backend(m), base.engine_thread, base=m.base
                )
            else:
                engine_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{m.id}-engine")
                self._hosted[m.id] = _HostedModel(self._make_backend(m), engine_thread)

    def _footprint_of(self, m: ModelManifest) -> scheduler_pb2.ModelFootprint:
        return scheduler_pb2.ModelFootprint(
            model=m.id,
            size_bytes=m.size_bytes,
            n_layers=m.n_layers,
            slots=slots_of(self._hosted[m.id].backend),
            aliases=m.aliases,
            base=m.base,
        )

    async def _estimate_sizes(self, footprints: list[scheduler_pb2.ModelFootprint]) -> None:
        for footprint in footprints:
            backend = self._hosted[footprint.model].backend
            if isinstance(backend, BatchingBackend):
                # The slots' caches can outweigh the weights: plan with both before the first load.
                try:
                    footprint.size_bytes = await asyncio.to_thread(backend.estimated_bytes)
                except Exception:  # An unreadable file fails its own loads, not the service's start.
                    log.warning(
                        "model %s: cannot read its size before loading", footprint.model, exc_info=True
                    )

    async def start(self, connect_timeout: float) -> None:
        """Registers with the scheduler, announcing what each model will take once loaded."""
        await self._estimate_sizes(self._footprints)
        await self.scheduler.start(connect_timeout, self._footprints, self.unload, self.resident_reports)

    async def follow_models_dir(
        self, models_dir: Path, modalities: Collection[Modality], every: float
    ) -> None:
        """Serves what `multai models add` installs and stops serving what `remove` deletes, within `every`
        seconds: the folder's manifests are compared at that interval (a stat each), and read on a change."""
        # The first look compares with the registry itself: a model may have come since it was read.
        seen: dict[str, int] | None = None
        while True:
            await asyncio.sleep(every)
            now = await asyncio.to_thread(_manifest_times, models_dir)
            if now != seen:
                seen = now
                registry = await asyncio.to_thread(ModelRegistry.scan, models_dir, modalities)
                try:
                    await self.sync_models(registry)
                except Exception:  # a model that cannot be hosted must not stop the following
                    log.exception("the models folder changed, and its models could not all be served")

    async def sync_models(self, registry: ModelRegistry) -> None:
        """Hosts the registry's new models and drops those it no longer has, in the order that keeps every
        request answerable: new models are hosted and announced before requests can name them, and a
        removed one is refused (404) before it is unloaded, once the requests using it are done."""
        wanted = {m.id for m in registry.models()}
        added = [m for m in registry.models() if m.id not in self._hosted]
        if not added and wanted == set(self._hosted):
            return
        self._host(added)
        new = [self._footprint_of(m) for m in added]
        await self._estimate_sizes(new)
        footprints = {f.model: f for f in [*self._footprints, *new]}
        self._footprints = [footprints[m.id] for m in registry.models()]
        self.scheduler.update_catalog(self._footprints)
        self.registry = registry
        for m in added:
            log.info("model %s was added to the models folder", m.id)
        # Adapters go before the models they run on.
        for model in sorted(set(self._hosted) - wanted, key=lambda m: not self._hosted[m].base):
            if await self.unload(model):
                self.scheduler.report_evicted(model)
            hosted = self._hosted.pop(model)
            if not hosted.base:
                hosted.engine_thread.shutdown(wait=False)
            log.info("model %s was removed from the models folder", model)

    async def stop(self) -> None:
        """Unloads everything and ends the registration."""
        for model in list(self._hosted):
            await self.unload(model)
        await self.scheduler.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        for hosted in self._hosted.values():
            hosted.engine_thread.shutdown(wait=False, cancel_futures=True)

    def resident_reports(self) -> list[ResidentReport]:
        """The models loaded now, for a (re-)registration."""
        return [
            ResidentReport(model, hosted.device, hosted.measured_bytes)
            for model, hosted in self._hosted.items()
            if hosted.device != common_pb2.DEVICE_UNSPECIFIED
        ]

    def pool_state(self) -> PoolState:
        """The service's totals, for the Inference Extension's metrics."""
        loaded = [m for m, hosted in self._hosted.items() if hosted.device != common_pb2.DEVICE_UNSPECIFIED]
        usages = []
        for model in loaded:
            backend: object = self._hosted[model].backend
            if isinstance(backend, KvCacheBackend):
                usages.append(backend.kv_cache_usage())
        return PoolState(
            waiting=self._waiting.total(),
            running=self._running.total(),
            kv_cache_usage=sum(usages) / len(usages) if usages else 0.0,
            running_models=sorted(loaded),
            waiting_models=sorted(m for m, count in self._waiting.items() if count and m not in loaded),
            max_models=len(self._hosted),
        )

    def backend_of(self, model: str) -> BackendT:
        """A model's backend object, loaded or not (for what needs no weights, e.g. its voice names)."""
        return self._hosted[model].backend

    def device_of(self, model: str) -> common_pb2.Device.ValueType:
        """Where a model is loaded; DEVICE_UNSPECIFIED when it is not."""
        return self._hosted[model].device

    @asynccontextmanager
    async def leased(
        self,
        manifest: ModelManifest,
        priority: common_pb2.Priority.ValueType,
        request_id: str,
        max_gpu_layers: int | None = None,
    ) -> AsyncIterator[BackendT]:
        """Holds a lease and the model's lock, with the model loaded where the lease says.

        request_id names the lease in the scheduler's status and logs; a caller that sent none gets one.
        max_gpu_layers caps the offload when this request is the one that loads the model on the GPU.
        """
        request_id = request_id or f"req_{uuid.uuid4().hex}"
        async with self._counted_lease(request_id, manifest.id, priority) as grant:
            hosted = self._hosted[manifest.id]
            on_engine_thread = _engine_thread.set(hosted.engine_thread)
            try:
                async with contextlib.AsyncExitStack() as using:
                    if hosted.base:
                        # The adapter's lease is the base's too: loaded on the granted device, kept there.
                        base = self._hosted[hosted.base]
                        await using.enter_async_context(self._using(hosted.base, base, grant, max_gpu_layers))
                    yield await using.enter_async_context(
                        self._using(manifest.id, hosted, grant, max_gpu_layers)
                    )
            finally:
                _engine_thread.reset(on_engine_thread)

    @asynccontextmanager
    async def _using(
        self, model: str, hosted: _HostedModel[BackendT], grant: Grant, max_gpu_layers: int | None
    ) -> AsyncIterator[BackendT]:
        """A model loaded where the grant says and held in use: a batching backend counts its users (an
        unload waits for none), any other is locked for the whole inference."""
        if slots_of(hosted.backend) == 1:
            async with hosted.lock:
                await self._ensure_loaded(model, hosted, grant, max_gpu_layers)
                yield hosted.backend
            return
        async with hosted.lock:
            await self._ensure_loaded(model, hosted, grant, max_gpu_layers)
            hosted.users += 1
            hosted.idle.clear()
        try:
            yield hosted.backend
        finally:
            hosted.users -= 1
            if hosted.users == 0:
                hosted.idle.set()

    @asynccontextmanager
    async def _counted_lease(
        self, request_id: str, model: str, priority: common_pb2.Priority.ValueType
    ) -> AsyncIterator[Grant]:
        """The scheduler's lease, counted as waiting until granted and as running while held."""
        waiting = self.metrics.requests_waiting.labels(model)
        running = self.metrics.requests_running.labels(model)
        waiting.inc()
        self._waiting[model] += 1
        granted = False
        try:
            async with self.scheduler.lease(request_id, model, priority, self._lease_wait_seconds) as grant:
                waiting.dec()
                self._waiting[model] -= 1
                granted = True
                running.inc()
                self._running[model] += 1
                try:
                    yield grant
                finally:
                    running.dec()
                    self._running[model] -= 1
        finally:
            if not granted:
                waiting.dec()
                self._waiting[model] -= 1

    async def _ensure_loaded(
        self, model: str, hosted: _HostedModel[BackendT], grant: Grant, max_gpu_layers: int | None
    ) -> None:
        if hosted.device == grant.device:
            return
        loop = asyncio.get_running_loop()
        if hosted.device != common_pb2.DEVICE_UNSPECIFIED:
            await loop.run_in_executor(hosted.engine_thread, hosted.backend.unload)
            hosted.device = common_pb2.DEVICE_UNSPECIFIED
        use_gpu = grant.device == common_pb2.DEVICE_GPU
        gpu_layers = grant.gpu_layers
        if max_gpu_layers is not None and max_gpu_layers >= 0:
            gpu_layers = max_gpu_layers if gpu_layers < 0 else min(gpu_layers, max_gpu_layers)
        log.info("loading %s on %s", model, f"GPU ({gpu_layers} layers)" if use_gpu else "CPU")
        started = time.monotonic()
        try:
            hosted.measured_bytes = await loop.run_in_executor(
                hosted.engine_thread, hosted.backend.load, use_gpu, gpu_layers
            )
        except BaseException:
            self.scheduler.report_evicted(model)
            raise
        hosted.device = grant.device
        load_seconds = time.monotonic() - started
        self.metrics.model_load_seconds.labels(model).observe(load_seconds)
        report = ResidentReport(model, grant.device, hosted.measured_bytes, load_seconds)
        self.scheduler.report_resident(report)

    async def unload(self, model: str) -> bool:
        """Frees a model's memory (a base model's adapters go with it); True when it was loaded."""
        hosted = self._hosted.get(model)
        if hosted is None:
            return False
        async with hosted.lock:
            if hosted.device == common_pb2.DEVICE_UNSPECIFIED:
                return False
            if hosted.users:
                await hosted.idle.wait()
            log.info("unloading %s", model)
            await asyncio.get_running_loop().run_in_executor(hosted.engine_thread, hosted.backend.unload)
            hosted.device = common_pb2.DEVICE_UNSPECIFIED
            # The weights its adapters were loaded onto are gone; none is in use, since this model is not.
            for adapter in self._hosted.values():
                if adapter.base == model:
                    adapter.device = common_pb2.DEVICE_UNSPECIFIED
            return True

    def _thread_for_call(self) -> ThreadPoolExecutor:
        """The leased model's engine thread inside a lease, the shared workers outside one."""
        return _engine_thread.get() or self._executor

    async def run_blocking(self, fn: Callable[..., ItemT], *args: object) -> ItemT:
        """Runs a blocking call off the loop: on the leased model's engine thread, or on a worker."""
        return await asyncio.get_running_loop().run_in_executor(self._thread_for_call(), fn, *args)

    async def stream(
        self, produce: Callable[[threading.Event], Iterator[ItemT]]
    ) -> AsyncGenerator[ItemT, None]:
        """Runs a blocking generator in an engine thread and yields its items on the loop.

        When the consumer stops early (client gone, deadline), the event tells the engine to stop, and this
        waits for the thread to finish so that the lease is only released once the device is idle. Consume it
        inside `contextlib.aclosing` within the lease: an async generator left by an exception is otherwise
        closed later, by the garbage collector in another task, after the lease and lock are released.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[bool, ItemT | BaseException | None]] = asyncio.Queue()
        cancel = threading.Event()

        def deliver(done: bool, payload: ItemT | BaseException | None) -> None:
            # RuntimeError: the loop closed during shutdown, and nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, (done, payload))

        def pump() -> None:
            try:
                for item in produce(cancel):
                    deliver(False, item)
                    if cancel.is_set():
                        break
            except BaseException as exc:
                deliver(True, exc)
                return
            deliver(True, None)

        worker = loop.run_in_executor(self._thread_for_call(), pump)
        try:
            while True:
                done, payload = await queue.get()
                if done:
                    if isinstance(payload, BaseException):
                        raise payload
                    return
                yield payload  # type: ignore[misc]
        finally:
            cancel.set()
            await _outlast(worker)


async def _outlast(worker: asyncio.Future[None]) -> None:
    """Waits for an engine thread to finish even if this task is cancelled again meanwhile (a lost lease
    cancels its holder a second time), then re-raises that cancellation.

    Returning earlier would release the model's lock and lease while the thread still uses the engine, and
    the next request would then drive the same engine from a second thread.
    """
    cancelled: asyncio.CancelledError | None = None
    while not worker.done():
        try:
            await asyncio.shield(worker)
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        raise cancelled
