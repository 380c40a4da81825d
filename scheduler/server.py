"""Builds the scheduler from its settings and serves it."""

import logging

import grpc
from prometheus_client import start_http_server

from multai.grpc_server import run_grpc_server
from multai.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from scheduler.arbiter import LeaseArbiter, LeaseTerms
from scheduler.config import SchedulerSettings
from scheduler.memory import (
    DeviceKind,
    GpuReader,
    GpuReading,
    MemoryPlanner,
    NvmlGpuReader,
    SystemMemoryProbe,
)
from scheduler.metrics import SchedulerMetrics
from scheduler.queue import LeaseQueue
from scheduler.servicer import SchedulerServicer

log = logging.getLogger(__name__)


def build_arbiter(settings: SchedulerSettings, gpu_reader: GpuReader | None = None) -> LeaseArbiter:
    """The arbiter over this host's devices (NVML unless a reader is given)."""
    probe = SystemMemoryProbe(
        gpu_reader if gpu_reader is not None else (NvmlGpuReader() if settings.use_gpu else _NoGpu()),
        settings.ram_budget_bytes,
        settings.ram_fraction,
        settings.vram_fraction,
    )
    planner = MemoryPlanner(
        probe, {DeviceKind.GPU: settings.max_gpu_leases, DeviceKind.CPU: settings.max_cpu_leases}
    )
    queue = LeaseQueue(settings.max_queue_per_level, settings.aging_seconds)
    terms = LeaseTerms(settings.lease_ttl_seconds, settings.max_lease_seconds)
    return LeaseArbiter(planner, queue, terms, SchedulerMetrics())


class _NoGpu:
    """The reader when --no-use-gpu is set."""

    def read(self) -> list[GpuReading]:
        return []


async def serve(settings: SchedulerSettings) -> None:
    """Serves the scheduler until SIGTERM."""
    arbiter = build_arbiter(settings)
    for device in arbiter.planner.devices:
        log.info("device %s: %d MB for models", device.name, device.budget_bytes // 10**6)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host, registry=arbiter.metrics.registry)
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)

    def add_servicers(server: grpc.aio.Server) -> list[str]:
        scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(SchedulerServicer(arbiter), server)
        return [scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name]

    await run_grpc_server(settings, add_servicers)
