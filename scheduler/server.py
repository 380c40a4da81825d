"""Builds the scheduler from its settings and serves it."""

import grpc

from multai.grpc_server import run_grpc_server
from multai.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from scheduler.arbiter import LeaseArbiter
from scheduler.config import SchedulerSettings
from scheduler.memory import DeviceKind, MemoryPlanner, SystemMemoryProbe
from scheduler.queue import LeaseQueue
from scheduler.servicer import SchedulerServicer


def build_arbiter(settings: SchedulerSettings) -> LeaseArbiter:
    """The arbiter over this host's real devices."""
    probe = SystemMemoryProbe(
        settings.ram_budget_bytes, settings.ram_fraction, settings.vram_fraction, settings.use_gpu
    )
    planner = MemoryPlanner(
        probe.devices(), {DeviceKind.GPU: settings.max_gpu_leases, DeviceKind.CPU: settings.max_cpu_leases}
    )
    return LeaseArbiter(planner, LeaseQueue(settings.max_queue_per_level))


async def serve(settings: SchedulerSettings) -> None:
    """Serves the scheduler until SIGTERM."""
    arbiter = build_arbiter(settings)

    def add_servicers(server: grpc.aio.Server) -> list[str]:
        scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(SchedulerServicer(arbiter), server)
        return [scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name]

    await run_grpc_server(settings, add_servicers)
