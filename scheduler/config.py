"""Settings of the scheduler process."""

from typing import ClassVar

from pydantic import Field

from multai.settings import GrpcServiceSettings


class SchedulerSettings(GrpcServiceSettings):
    """Settings of the scheduler (env MULTAI_<NAME>, TOML section [scheduler], or the flags below)."""

    toml_section: ClassVar[str] = "scheduler"

    port: int = Field(50050, description="Port to bind.")
    ram_budget_bytes: int = Field(0, ge=0, description="RAM for models; 0 means ram_fraction of total RAM.")
    ram_fraction: float = Field(0.8, gt=0, le=1, description="Share of total RAM models may take.")
    vram_fraction: float = Field(0.9, gt=0, le=1, description="Share of GPU memory models may take.")
    use_gpu: bool = Field(True, description="Place models on the GPU when NVML finds one.")
    max_gpu_leases: int = Field(
        1, ge=1, description="Models running on the GPU at once; each runs one batch of up to its slots."
    )
    max_cpu_leases: int = Field(
        1, ge=1, description="Models running on the CPU at once; each runs one batch of up to its slots."
    )
    max_queue_per_level: int = Field(256, ge=1, description="Waiters per priority level before 429.")
    aging_seconds: float = Field(30.0, gt=0, description="A waiter rises one level after this long.")
    lease_ttl_seconds: float = Field(30.0, gt=0, description="A lease expires unless renewed within this.")
    max_lease_seconds: float = Field(900.0, gt=0, description="No renewal extends a lease beyond this.")
    metrics_port: int = Field(0, ge=0, description="Port of the Prometheus /metrics endpoint; 0 disables it.")
