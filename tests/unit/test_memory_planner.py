"""MemoryPlanner decisions and the NVML probe, with fake devices."""

from scheduler.memory import (
    DeviceKind,
    Evict,
    Footprint,
    MemoryPlanner,
    Place,
    Refuse,
    ResidentModel,
    SystemMemoryProbe,
    Wait,
)
from tests.unit.fakes import GB, FakeGpuReader, FakeProbe, card


def planner(gpu_gb: int | None, ram_gb: int, **live_free_gb: int) -> MemoryPlanner:
    probe = FakeProbe(None if gpu_gb is None else gpu_gb * GB, ram_gb * GB)
    probe.live_free = {DeviceKind[k.upper()]: v * GB for k, v in live_free_gb.items()}
    return MemoryPlanner(probe, {DeviceKind.GPU: 1, DeviceKind.CPU: 1})


def resident(model: str, device: DeviceKind, gb: int, last_used: float, leases: int = 0) -> ResidentModel:
    return ResidentModel(model, "svc", device, gb * GB, last_used, active_leases=leases, loaded=True)


def test_fits_on_gpu_first() -> None:
    assert planner(24, 64).decide("m", Footprint(10 * GB), {}) == Place(DeviceKind.GPU, -1)


def test_no_gpu_means_cpu() -> None:
    assert planner(None, 64).decide("m", Footprint(10 * GB), {}) == Place(DeviceKind.CPU, -1)


def test_three_models_that_do_not_fit_together_evict_least_recently_used() -> None:
    models = {
        "old": resident("old", DeviceKind.GPU, 10, last_used=1.0),
        "new": resident("new", DeviceKind.GPU, 10, last_used=2.0),
    }
    assert planner(24, 64).decide("third", Footprint(10 * GB), models) == Evict(("old",))


def test_gguf_larger_than_free_vram_gets_partial_gpu_layers() -> None:
    decision = planner(24, 64).decide("big", Footprint(40 * GB, n_layers=80), {})
    # 0.5 GB per layer: 48 layers fill the 24 GB card, the other 16 GB stay in RAM.
    assert decision == Place(DeviceKind.GPU, 48, 16 * GB)


def test_model_larger_than_vram_but_not_splittable_runs_on_cpu() -> None:
    assert planner(24, 64).decide("big", Footprint(40 * GB), {}) == Place(DeviceKind.CPU, -1)


def test_live_free_memory_limits_placement_below_the_budget() -> None:
    # Another process holds 20 GB of the 24 GB card: the 10 GB model goes to RAM.
    assert planner(24, 64, gpu=4).decide("m", Footprint(10 * GB), {}) == Place(DeviceKind.CPU, -1)


def test_busy_models_are_not_evicted() -> None:
    models = {"busy": resident("busy", DeviceKind.CPU, 60, last_used=1.0, leases=1)}
    assert planner(None, 64).decide("m", Footprint(10 * GB), models) == Wait()


def test_resident_model_waits_for_its_device_slot() -> None:
    models = {"m": resident("m", DeviceKind.CPU, 1, last_used=1.0, leases=1)}
    assert planner(None, 64).decide("m", Footprint(1 * GB), models) == Wait()


def test_model_larger_than_every_device_is_refused_with_missing_bytes() -> None:
    decision = planner(24, 32).decide("huge", Footprint(40 * GB), {})
    assert isinstance(decision, Refuse)
    assert "huge" in decision.message and str(8 * GB) in decision.message


def test_nvml_probe_reads_the_first_card_and_its_free_memory() -> None:
    for total in (24, 80):
        reader = FakeGpuReader(card(total, free_gb=total - 2))
        probe = SystemMemoryProbe(reader, ram_budget_bytes=64 * GB, ram_fraction=0.8, vram_fraction=0.9)
        gpu, cpu = probe.devices()
        assert gpu.kind is DeviceKind.GPU and gpu.budget_bytes == int(total * GB * 0.9)
        assert cpu.budget_bytes == 64 * GB
        assert probe.free_bytes(DeviceKind.GPU) == (total - 2) * GB


def test_no_gpu_reading_means_cpu_only() -> None:
    probe = SystemMemoryProbe(FakeGpuReader(), ram_budget_bytes=0, ram_fraction=0.5, vram_fraction=0.9)
    assert [d.kind for d in probe.devices()] == [DeviceKind.CPU]
    assert probe.free_bytes(DeviceKind.GPU) == 0
