"""The one way a modality service is put together: registry, ModelHost, its servicers, ModelControl."""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import start_http_server

from multai.common.v1 import model_control_pb2, model_control_pb2_grpc
from multai.grpc_server import run_grpc_server
from multai.mesh_tls import MeshChannels
from multai.model_control import ModelControlServicer
from multai.model_host import ModelHost
from multai.registry import Modality, ModelManifest, ModelRegistry
from multai.scheduler_client import SchedulerClient
from multai.settings import ModelServiceSettings

log = logging.getLogger(__name__)
MODEL_CONTROL_SERVICE = model_control_pb2.DESCRIPTOR.services_by_name["ModelControlService"].full_name


async def serve_model_service(
    settings: ModelServiceSettings,
    service_name: str,
    modalities: tuple[Modality, ...],
    make_backend: Callable[[ModelManifest], Any],
    add_servicers: Callable[[grpc.aio.Server, ModelHost[Any]], list[str]],
) -> None:
    """Serves the models of the given modalities found in the models folder until SIGTERM.

    add_servicers registers the modality's own servicers and returns their full service names;
    ModelControlService and health come with every service (reflection when grpc_reflection is on).
    """
    registry = ModelRegistry.scan(settings.models_dir, modalities)
    scheduler = SchedulerClient(
        settings.scheduler_address, service_name, MeshChannels.from_settings(settings)
    )
    host: ModelHost[Any] = ModelHost(
        service_name, registry, make_backend, scheduler, settings.lease_wait_seconds
    )

    def add_all(server: grpc.aio.Server) -> list[str]:
        names = add_servicers(server, host)
        model_control_pb2_grpc.add_ModelControlServiceServicer_to_server(ModelControlServicer(host), server)
        return [*names, MODEL_CONTROL_SERVICE]

    following: list[asyncio.Task[None]] = []

    async def on_started() -> None:
        await host.start(settings.scheduler_connect_seconds)
        if settings.metrics_port:
            # prometheus_client serves from a thread of its own, off the event loop.
            start_http_server(settings.metrics_port, addr=settings.host, registry=host.metrics.registry)
            log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
        if settings.models_poll_seconds:
            follow = host.follow_models_dir(settings.models_dir, modalities, settings.models_poll_seconds)
            following.append(asyncio.create_task(follow))

    async def on_stopping() -> None:
        for task in following:
            task.cancel()
        await host.stop()

    await run_grpc_server(
        settings,
        add_all,
        on_started=on_started,
        on_stopping=on_stopping,
        max_call_seconds=settings.max_request_seconds,
    )
