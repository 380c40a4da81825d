"""MemoryPlanner decisions with fake devices (no NVML, no psutil)."""

from scheduler.memory import (
    DeviceBudget,
    DeviceKind,
    Evict,
    MemoryPlanner,
    Place,
    Refuse,
    ResidentModel,
    Wait,
)

GB = 10**9


def planner(gpu_gb: int | None, ram_gb: int) -> MemoryPlanner:
    devices = [DeviceBudget(DeviceKind.CPU, "cpu", ram_gb * GB)]
    if gpu_gb is not None:
        devices.insert(0, DeviceBudget(DeviceKind.GPU, "fake-gpu", gpu_gb * GB))
    return MemoryPlanner(devices, {DeviceKind.GPU: 1, DeviceKind.CPU: 1})


def resident(model: str, device: DeviceKind, gb: int, last_used: float, leases: int = 0) -> ResidentModel:
    return ResidentModel(model, "svc", device, gb * GB, last_used, active_leases=leases)


def test_fits_on_gpu_first() -> None:
    assert planner(24, 64).decide("m", 10 * GB, {}) == Place(DeviceKind.GPU, -1)


def test_no_gpu_means_cpu() -> None:
    assert planner(None, 64).decide("m", 10 * GB, {}) == Place(DeviceKind.CPU, -1)


def test_evicts_least_recently_used_idle_models() -> None:
    models = {
        "old": resident("old", DeviceKind.GPU, 10, last_used=1.0),
        "new": resident("new", DeviceKind.GPU, 10, last_used=2.0),
    }
    assert planner(24, 64).decide("m", 10 * GB, models) == Evict(("old",))


def test_busy_models_are_not_evicted_and_larger_models_fall_back_to_cpu() -> None:
    models = {"busy": resident("busy", DeviceKind.GPU, 20, last_used=1.0, leases=1)}
    assert planner(24, 64).decide("m", 10 * GB, models) == Place(DeviceKind.CPU, -1)


def test_resident_model_waits_for_its_device_slot() -> None:
    models = {"m": resident("m", DeviceKind.CPU, 1, last_used=1.0, leases=1)}
    assert planner(None, 64).decide("m", 1 * GB, models) == Wait()


def test_model_larger_than_every_device_is_refused_with_missing_bytes() -> None:
    decision = planner(24, 32).decide("huge", 40 * GB, {})
    assert isinstance(decision, Refuse)
    assert "huge" in decision.message and str(8 * GB) in decision.message
