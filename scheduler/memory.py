"""Device memory: what the host has (MemoryProbe) and where a model should go (MemoryPlanner)."""

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import psutil

log = logging.getLogger(__name__)


class DeviceKind(Enum):
    """The kinds of device a lease can grant."""

    CPU = "cpu"
    GPU = "gpu"


@dataclass(frozen=True)
class DeviceBudget:
    """How much of one device's memory the scheduler may fill with models."""

    kind: DeviceKind
    name: str
    budget_bytes: int


@dataclass(frozen=True)
class GpuReading:
    """One GPU as NVML reports it."""

    name: str
    total_bytes: int
    free_bytes: int


class GpuReader(Protocol):
    """Reads the GPUs; NvmlGpuReader is the real one, tests pass fakes (a 24 GB card, an 80 GB card)."""

    def read(self) -> list[GpuReading]: ...


class NvmlGpuReader:
    """GPUs through pynvml; no driver or no library reads as no GPU."""

    def __init__(self) -> None:
        self._available = False
        try:
            import pynvml

            pynvml.nvmlInit()
            self._available = True
        except Exception as exc:  # pynvml raises its own NVMLError types, and ImportError without it.
            log.info("no GPU found through NVML (%s); placing models on the CPU", exc)

    def read(self) -> list[GpuReading]:
        if not self._available:
            return []
        import pynvml

        readings = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            readings.append(GpuReading(f"cuda:{index} {name}", int(memory.total), int(memory.free)))
        return readings


class MemoryProbe(Protocol):
    """The devices' budgets (fixed at start) and their free memory now."""

    def devices(self) -> list[DeviceBudget]: ...

    def free_bytes(self, kind: DeviceKind) -> int: ...


class SystemMemoryProbe:
    """RAM from psutil and the first GPU from a GpuReader (the scheduler arbitrates one GPU per host)."""

    def __init__(
        self, gpu_reader: GpuReader, ram_budget_bytes: int, ram_fraction: float, vram_fraction: float
    ) -> None:
        self._gpu_reader = gpu_reader
        self._ram_budget_bytes = ram_budget_bytes
        self._ram_fraction = ram_fraction
        self._vram_fraction = vram_fraction

    def devices(self) -> list[DeviceBudget]:
        ram = self._ram_budget_bytes or int(psutil.virtual_memory().total * self._ram_fraction)
        found = [DeviceBudget(DeviceKind.CPU, "cpu", ram)]
        gpus = self._gpu_reader.read()
        if gpus:
            gpu = gpus[0]
            found.insert(
                0, DeviceBudget(DeviceKind.GPU, gpu.name, int(gpu.total_bytes * self._vram_fraction))
            )
        return found

    def free_bytes(self, kind: DeviceKind) -> int:
        if kind is DeviceKind.CPU:
            return int(psutil.virtual_memory().available)
        gpus = self._gpu_reader.read()
        return gpus[0].free_bytes if gpus else 0


@dataclass(frozen=True)
class Footprint:
    """What a model needs: its bytes, and its layers when it can be split between GPU and CPU."""

    size_bytes: int
    n_layers: int = 0
    # Requests served at once in one batch (a llama.cpp model's slots); 1 means one at a time.
    slots: int = 1
    # For an adapter (LoRA): the model it runs on, in whose batch its requests decode.
    base: str = ""


@dataclass
class ResidentModel:
    """A model loaded (or being loaded) by a service."""

    model: str
    service_id: str
    device: DeviceKind
    size_bytes: int
    last_used: float
    active_leases: int = 0
    unloading: bool = False
    # False from the grant until the service reports the load: its memory is not yet visible to the probe.
    loaded: bool = False
    # For a model split between GPU and CPU: the layers on the GPU and the bytes left in RAM.
    gpu_layers: int = -1
    cpu_bytes: int = 0
    slots: int = 1
    # For an adapter: the model it is loaded onto. Its leases are also its base's (they run in that batch),
    # and its bytes are its own, beside the base's.
    base: str = ""

    @property
    def batch_running(self) -> bool:
        """Whether leases are active on it: a running batch, which holds its device."""
        return self.active_leases > 0

    def bytes_on(self, kind: DeviceKind) -> int:
        """Memory this model takes on a device."""
        if kind is self.device:
            return self.size_bytes
        return self.cpu_bytes if kind is DeviceKind.CPU else 0


@dataclass(frozen=True)
class Place:
    """Grant on this device; a split model keeps cpu_bytes in RAM."""

    device: DeviceKind
    gpu_layers: int
    cpu_bytes: int = 0


@dataclass(frozen=True)
class Evict:
    """Unload these idle models first, then decide again."""

    models: tuple[str, ...]


@dataclass(frozen=True)
class Wait:
    """Nothing to do until a lease ends or an unload completes."""


@dataclass(frozen=True)
class Refuse:
    """The model can never fit; the message names it and the bytes missing."""

    message: str


Decision = Place | Evict | Wait | Refuse


class MemoryPlanner:
    """Decides where a model runs, in the order of DESIGN §3: resident device; GPU if it fits; GPU after
    unloading idle models (least recently used first); a split GGUF with as many GPU layers as fit; CPU
    (again after unloading idle models); otherwise refuse with the bytes missing."""

    def __init__(self, probe: MemoryProbe, max_active_leases: Mapping[DeviceKind, int]) -> None:
        self.probe = probe
        self.devices = probe.devices()
        self._max_active_leases = max_active_leases

    def budget(self, kind: DeviceKind) -> int:
        """The memory the scheduler may fill on a device; 0 for a device the host lacks."""
        return next((d.budget_bytes for d in self.devices if d.kind is kind), 0)

    def used_bytes(self, kind: DeviceKind, resident: Mapping[str, ResidentModel]) -> int:
        """Memory taken on a device by resident models, counting those still loading or unloading."""
        return sum(r.bytes_on(kind) for r in resident.values())

    def active_leases(self, kind: DeviceKind, resident: Mapping[str, ResidentModel]) -> int:
        """Leases active on a device (an adapter's count on its base)."""
        return sum(r.active_leases for r in resident.values() if r.device is kind and not r.base)

    def running_batches(self, kind: DeviceKind, resident: Mapping[str, ResidentModel]) -> int:
        """Models with active leases on a device; the device's lease limit counts these batches."""
        return sum(1 for r in resident.values() if r.device is kind and r.batch_running and not r.base)

    def can_join(self, model: str, resident: Mapping[str, ResidentModel]) -> bool:
        """Whether a request for `model` can join its running batch now: a slot is free (for a loaded
        adapter, in its base's batch)."""
        current = resident.get(model)
        if current is None or current.unloading:
            return False
        batch = resident.get(current.base) if current.base else current
        return (
            batch is not None
            and not batch.unloading
            and batch.batch_running
            and batch.active_leases < batch.slots
        )

    def free_bytes(self, kind: DeviceKind, resident: Mapping[str, ResidentModel]) -> int:
        """What a new model may take: the budget left, and no more than the device really has free
        (other processes use memory too) minus the loads granted but not yet visible to the probe."""
        budget_left = self.budget(kind) - self.used_bytes(kind, resident)
        pending = sum(r.bytes_on(kind) for r in resident.values() if not r.loaded)
        return min(budget_left, self.probe.free_bytes(kind) - pending)

    def decide(
        self,
        model: str,
        footprint: Footprint,
        resident: Mapping[str, ResidentModel],
        base_footprint: Footprint | None = None,
    ) -> Decision:
        """One placement decision for the waiter at the head of the queue; an adapter's needs its base's
        footprint."""
        if footprint.base:
            assert base_footprint is not None
            return self._decide_adapter(model, footprint, base_footprint, resident)
        current = resident.get(model)
        if current is not None:
            if current.unloading:
                return Wait()  # its unload is under way; it loads again once that is done
            if current.batch_running:
                # Its batch holds the device already: join it while a slot is free.
                if self.can_join(model, resident):
                    return Place(current.device, current.gpu_layers, current.cpu_bytes)
                return Wait()
            return self._when_free(
                current.device, Place(current.device, current.gpu_layers, current.cpu_bytes), resident
            )
        size = footprint.size_bytes
        blocked_by_busy_models = False
        for kind in (DeviceKind.GPU, DeviceKind.CPU):
            budget = self.budget(kind)
            if budget == 0:
                continue
            free = self.free_bytes(kind, resident)
            if size <= free:
                return self._when_free(kind, Place(kind, -1), resident)
            if size <= budget:
                victims = self._lru_victims(kind, size - free, resident)
                if victims is not None:
                    return Evict(victims) if victims else Wait()
                blocked_by_busy_models = True
            if kind is DeviceKind.GPU:
                split = self._split(footprint, resident)
                if split is not None:
                    return self._when_free(kind, split, resident)
        if blocked_by_busy_models:
            return Wait()
        largest = max(d.budget_bytes for d in self.devices)
        return Refuse(
            f"model '{model}' needs {size} bytes but the largest device budget is {largest} bytes "
            f"({size - largest} bytes missing)"
        )

    def _decide_adapter(
        self,
        model: str,
        footprint: Footprint,
        base_footprint: Footprint,
        resident: Mapping[str, ResidentModel],
    ) -> Decision:
        """An adapter runs where its base is. A base not loaded is placed with room for both; a loaded one
        takes the adapter beside it, after unloading idle adapters and models (never the base) if needed."""
        base = resident.get(footprint.base)
        if base is None:
            both = Footprint(
                base_footprint.size_bytes + footprint.size_bytes,
                base_footprint.n_layers,
                base_footprint.slots,
            )
            return self.decide(footprint.base, both, resident)
        current = resident.get(model)
        if base.unloading or (current is not None and current.unloading):
            return Wait()
        if current is None:
            missing = footprint.size_bytes - self.free_bytes(base.device, resident)
            if missing > 0:
                victims = self._lru_victims(base.device, missing, resident, keep=footprint.base)
                return Evict(victims) if victims else Wait()
        place = Place(base.device, base.gpu_layers, base.cpu_bytes)
        if base.batch_running:
            return place if base.active_leases < base.slots else Wait()
        return self._when_free(base.device, place, resident)

    def _split(self, footprint: Footprint, resident: Mapping[str, ResidentModel]) -> Place | None:
        """As many layers on the GPU as its free memory holds, the rest in RAM; None if no split fits."""
        if footprint.n_layers < 2:
            return None
        per_layer = math.ceil(footprint.size_bytes / footprint.n_layers)
        layers = min(footprint.n_layers - 1, self.free_bytes(DeviceKind.GPU, resident) // per_layer)
        if layers < 1:
            return None
        cpu_bytes = footprint.size_bytes - layers * per_layer
        if cpu_bytes > self.free_bytes(DeviceKind.CPU, resident):
            return None
        return Place(DeviceKind.GPU, int(layers), cpu_bytes)

    def _when_free(self, kind: DeviceKind, place: Place, resident: Mapping[str, ResidentModel]) -> Decision:
        if self.running_batches(kind, resident) >= self._max_active_leases[kind]:
            return Wait()
        return place

    def _lru_victims(
        self, kind: DeviceKind, missing: int, resident: Mapping[str, ResidentModel], keep: str = ""
    ) -> tuple[str, ...] | None:
        """Idle models to unload, idle adapters first, each kind least recently used first, that free
        `missing` bytes; a model's unload frees its adapters too. `keep` is never chosen.

        Returns () when enough memory is already being freed by unloads under way, and None when even
        unloading every idle model would not free enough (a busy model stands in the way).
        """
        unloading = sum(r.bytes_on(kind) for r in resident.values() if r.unloading)
        if unloading >= missing:
            return ()
        idle = sorted(
            (
                r
                for r in resident.values()
                if r.bytes_on(kind) and not r.unloading and r.active_leases == 0 and r.model != keep
            ),
            key=lambda r: (not r.base, r.last_used),
        )
        victims: list[str] = []
        counted: set[str] = set()
        freed = unloading
        for r in idle:
            if r.model in counted:
                continue
            victims.append(r.model)
            going = [r, *(a for a in resident.values() if a.base == r.model and not a.unloading)]
            for entry in going:
                if entry.model not in counted:
                    counted.add(entry.model)
                    freed += entry.bytes_on(kind)
            if freed >= missing:
                return tuple(victims)
        return None
