"""Device memory: what the host has (MemoryProbe) and where a model should go (MemoryPlanner)."""

import logging
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


class MemoryProbe(Protocol):
    """Reads the devices of the host; the real one uses psutil and pynvml, tests use fakes."""

    def devices(self) -> list[DeviceBudget]: ...


class SystemMemoryProbe:
    """RAM from psutil and the first NVIDIA GPU from NVML; no NVML or no GPU means no GPU device."""

    def __init__(
        self, ram_budget_bytes: int, ram_fraction: float, vram_fraction: float, use_gpu: bool
    ) -> None:
        self._ram_budget_bytes = ram_budget_bytes
        self._ram_fraction = ram_fraction
        self._vram_fraction = vram_fraction
        self._use_gpu = use_gpu

    def devices(self) -> list[DeviceBudget]:
        ram = self._ram_budget_bytes or int(psutil.virtual_memory().total * self._ram_fraction)
        found = [DeviceBudget(DeviceKind.CPU, "cpu", ram)]
        if self._use_gpu:
            gpu = self._first_gpu()
            if gpu is not None:
                found.insert(0, gpu)
        return found

    def _first_gpu(self) -> DeviceBudget | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() == 0:
                return None
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
            name = pynvml.nvmlDeviceGetName(handle)
        except Exception as exc:  # NVML raises its own error types when no driver is present.
            log.info("no GPU found through NVML (%s); placing models on the CPU", exc)
            return None
        return DeviceBudget(DeviceKind.GPU, f"cuda:0 {name}", int(total * self._vram_fraction))


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


@dataclass(frozen=True)
class Place:
    """Grant on this device."""

    device: DeviceKind
    gpu_layers: int


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
    """Decides where a model runs: resident device, else GPU, else GPU after LRU evictions, else CPU."""

    def __init__(self, devices: list[DeviceBudget], max_active_leases: Mapping[DeviceKind, int]) -> None:
        self.devices = devices
        self._max_active_leases = max_active_leases

    def used_bytes(self, kind: DeviceKind, resident: Mapping[str, ResidentModel]) -> int:
        """Memory taken on a device by resident models, counting those still unloading."""
        return sum(r.size_bytes for r in resident.values() if r.device is kind)

    def active_leases(self, kind: DeviceKind, resident: Mapping[str, ResidentModel]) -> int:
        """Leases active on a device."""
        return sum(r.active_leases for r in resident.values() if r.device is kind)

    def decide(self, model: str, size_bytes: int, resident: Mapping[str, ResidentModel]) -> Decision:
        """One placement decision for the waiter at the head of the queue."""
        current = resident.get(model)
        if current is not None and not current.unloading:
            return self._when_free(current.device, Place(current.device, -1), resident)
        if current is not None:
            return Wait()  # its unload is under way; load it again once that is done
        blocked_by_busy_models = False
        for device in self.devices:
            free = device.budget_bytes - self.used_bytes(device.kind, resident)
            if size_bytes <= free:
                return self._when_free(device.kind, Place(device.kind, -1), resident)
            if size_bytes <= device.budget_bytes:
                victims = self._lru_victims(device.kind, size_bytes - free, resident)
                if victims is not None:
                    return Evict(victims) if victims else Wait()
                blocked_by_busy_models = True
        if blocked_by_busy_models:
            return Wait()
        largest = max(d.budget_bytes for d in self.devices)
        return Refuse(
            f"model '{model}' needs {size_bytes} bytes but the largest device budget is {largest} bytes "
            f"({size_bytes - largest} bytes missing)"
        )

    def _when_free(self, kind: DeviceKind, place: Place, resident: Mapping[str, ResidentModel]) -> Decision:
        if self.active_leases(kind, resident) >= self._max_active_leases[kind]:
            return Wait()
        return place

    def _lru_victims(
        self, kind: DeviceKind, missing: int, resident: Mapping[str, ResidentModel]
    ) -> tuple[str, ...] | None:
        """Idle models to unload, least recently used first, that free `missing` bytes.

        Returns () when enough memory is already being freed by unloads under way, and None when even
        unloading every idle model would not free enough (a busy model stands in the way: wait).
        """
        unloading = sum(r.size_bytes for r in resident.values() if r.device is kind and r.unloading)
        if unloading >= missing:
            return ()
        idle = sorted(
            (r for r in resident.values() if r.device is kind and not r.unloading and r.active_leases == 0),
            key=lambda r: r.last_used,
        )
        victims: list[str] = []
        freed = unloading
        for r in idle:
            victims.append(r.model)
            freed += r.size_bytes
            if freed >= missing:
                return tuple(victims)
        return None
