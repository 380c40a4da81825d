"""Builds the endpoint picker from its settings and serves it."""

import asyncio
import logging

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2, external_processor_pb2_grpc
from grpc_health.v1 import health, health_pb2
from prometheus_client import start_http_server

from multai.api_keys import KeyStore
from multai.grpc_server import run_grpc_server
from multai.mesh_tls import MeshChannels
from multai.state_db import database_url, open_engine
from picker.config import PickerSettings
from picker.keys import KeyTiers
from picker.metrics import PickerMetrics
from picker.nodes import NodeSet, parse_node
from picker.policy import PickRules
from picker.servicer import EndpointPicker

log = logging.getLogger(__name__)
EXT_PROC_SERVICE = external_processor_pb2.DESCRIPTOR.services_by_name["ExternalProcessor"].full_name
# The Inference Extension's health services: alive at all, and ready (nodes known) to pick.
LIVENESS, READINESS = "liveness", "readiness"


async def serve(settings: PickerSettings) -> None:
    """Serves the picker until SIGTERM; it is ready once one node's scheduler has reported."""
    if not settings.nodes and not settings.nodes_dns:
        raise SystemExit("the picker needs --nodes ENDPOINT=SCHEDULER ... or --nodes-dns NAME")
    metrics = PickerMetrics()
    health_servicer = health.aio.HealthServicer()
    # The health states to publish, latest last: set from a callback, applied by one task in order.
    readiness_changes: asyncio.Queue[bool] = asyncio.Queue()
    ready_once = asyncio.Event()

    def nodes_changed() -> None:
        ready = nodes.any_ready()
        metrics.ready_nodes.set(len(nodes.views(settings.claim_seconds)))
        readiness_changes.put_nowait(ready)
        if ready:
            ready_once.set()

    async def publish_readiness() -> None:
        published = None
        while True:
            ready = await readiness_changes.get()
            if ready != published:
                status = (
                    health_pb2.HealthCheckResponse.SERVING
                    if ready
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                for name in (READINESS, EXT_PROC_SERVICE):
                    await health_servicer.set(name, status)
                published = ready

    nodes = NodeSet(MeshChannels.from_settings(settings), nodes_changed)
    rules = PickRules(
        settings.busy_window_seconds,
        settings.shed_background_waiting,
        settings.shed_normal_waiting,
        settings.max_fallbacks,
    )
    tiers = None
    if settings.key_tiers:
        # Opening the database may create its tables: off the event loop, once, before the server starts.
        engine = await asyncio.to_thread(lambda: open_engine(database_url(settings)))
        tiers = KeyTiers(KeyStore(engine))
    picker = EndpointPicker(
        lambda: nodes.views(settings.claim_seconds),
        nodes.picked,
        rules,
        settings.retry_after_seconds,
        metrics,
        tiers,
    )
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
    background: list[asyncio.Task[None]] = []

    def add_servicers(server: grpc.aio.Server) -> list[str]:
        external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(picker, server)
        return [EXT_PROC_SERVICE]

    async def started() -> None:
        await health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        background.append(asyncio.create_task(publish_readiness()))
        if tiers is not None:
            background.append(asyncio.create_task(tiers.refresh_forever(settings.key_refresh_seconds)))
        nodes.set_nodes([parse_node(spec) for spec in settings.nodes])
        if settings.nodes_dns:
            follow = asyncio.create_task(
                nodes.follow_dns(
                    settings.nodes_dns,
                    settings.node_bridge_port,
                    settings.node_scheduler_port,
                    settings.dns_refresh_seconds,
                )
            )
            background.append(follow)
        # Health turns SERVING when this returns: not before a node can be picked.
        await ready_once.wait()

    async def stopping() -> None:
        for task in background:
            task.cancel()
        await nodes.close()

    await run_grpc_server(
        settings, add_servicers, on_started=started, on_stopping=stopping, health_servicer=health_servicer
    )
