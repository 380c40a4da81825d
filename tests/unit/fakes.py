"""Fakes for scheduler unit tests: devices of any size, without NVML or psutil."""

from dataclasses import dataclass, field

from scheduler.memory import DeviceBudget, DeviceKind, GpuReading

GB = 10**9
MB = 10**6


class FakeGpuReader:
    """NVML as a list of cards whose free memory a test can change."""

    def __init__(self, *cards: GpuReading) -> None:
        self.cards = list(cards)

    def read(self) -> list[GpuReading]:
        return list(self.cards)


def card(total_gb: int, free_gb: int | None = None, name: str = "fake") -> GpuReading:
    total = total_gb * GB
    return GpuReading(f"cuda:0 {name}", total, total if free_gb is None else free_gb * GB)


@dataclass
class FakeProbe:
    """Budgets as given; live free memory is the budget unless a test sets it (other processes' use)."""

    gpu_bytes: int | None
    ram_bytes: int
    live_free: dict[DeviceKind, int] = field(default_factory=dict)

    def devices(self) -> list[DeviceBudget]:
        found = [DeviceBudget(DeviceKind.CPU, "cpu", self.ram_bytes)]
        if self.gpu_bytes is not None:
            found.insert(0, DeviceBudget(DeviceKind.GPU, "fake-gpu", self.gpu_bytes))
        return found

    def free_bytes(self, kind: DeviceKind) -> int:
        default = self.gpu_bytes if kind is DeviceKind.GPU else self.ram_bytes
        return self.live_free.get(kind, default or 0)
