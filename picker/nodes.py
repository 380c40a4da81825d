"""The nodes the picker routes to, each followed by a watch on its scheduler's status (not a poll per
request)."""

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from multai.mesh_tls import MeshChannels
from multai.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from picker.policy import NodeView

log = logging.getLogger(__name__)
RECONNECT_SECONDS = 0.5
# The scheduler sends a heartbeat every 2 s; a watch silent for longer is a node that hangs.
STALE_SECONDS = 6.0


@dataclass
class Node:
    """One node: where its requests go, where its scheduler is, what it last said."""

    endpoint: str
    scheduler: str
    status: scheduler_pb2.GetStatusResponse | None = None
    received_at: float = 0.0
    # Requests sent here that its status has not shown yet: request id -> (when, model).
    picks: dict[str, tuple[float, str]] = field(default_factory=dict)
    last_picked: float = 0.0
    watch: asyncio.Task[None] | None = None

    def ready(self, now: float) -> bool:
        return self.status is not None and now - self.received_at < STALE_SECONDS

    def view(self, now: float, claim_seconds: float) -> NodeView:
        assert self.status is not None
        self.picks = {rid: pick for rid, pick in self.picks.items() if now - pick[0] < claim_seconds}
        pending = Counter(model for _, model in self.picks.values())
        return NodeView(self.endpoint, self.status, now - self.received_at, pending, self.last_picked)


def parse_node(spec: str) -> tuple[str, str]:
    """ENDPOINT=SCHEDULER into its two addresses."""
    endpoint, sep, scheduler = spec.partition("=")
    if not sep or not endpoint or not scheduler:
        raise ValueError(f"a node is ENDPOINT=SCHEDULER (two host:port), not {spec!r}")
    return endpoint, scheduler


class NodeSet:
    """The nodes, kept current: a watch per node, and for a DNS name its addresses re-resolved."""

    def __init__(self, channels: MeshChannels, on_change: Callable[[], None]) -> None:
        self._channels = channels
        self._on_change = on_change
        self.nodes: dict[str, Node] = {}
        self._unnamed = itertools.count()

    def views(self, claim_seconds: float) -> list[NodeView]:
        """The ready nodes as the rule sees them."""
        now = time.monotonic()
        return [node.view(now, claim_seconds) for node in self.nodes.values() if node.ready(now)]

    def picked(self, endpoint: str, model: str | None, request_id: str) -> None:
        """Counts a pick on its node until the node's status shows the request (by its id)."""
        node = self.nodes.get(endpoint)
        if node is None:
            return
        now = time.monotonic()
        node.last_picked = now
        if model is not None:
            node.picks[request_id or f"unnamed-{next(self._unnamed)}"] = (now, model)

    def any_ready(self) -> bool:
        now = time.monotonic()
        return any(node.ready(now) for node in self.nodes.values())

    def set_nodes(self, specs: list[tuple[str, str]]) -> None:
        """Starts watching new nodes and stops watching those no longer listed."""
        wanted = dict(specs)
        for endpoint in list(self.nodes):
            if endpoint not in wanted:
                node = self.nodes.pop(endpoint)
                if node.watch is not None:
                    node.watch.cancel()
                log.info("node %s left", endpoint)
        for endpoint, scheduler in wanted.items():
            if endpoint not in self.nodes:
                node = Node(endpoint, scheduler)
                node.watch = asyncio.create_task(self._follow(node))
                self.nodes[endpoint] = node
                log.info("node %s (scheduler %s) joined", endpoint, scheduler)
        self._on_change()

    async def follow_dns(self, name: str, bridge_port: int, scheduler_port: int, every: float) -> None:
        """Keeps the nodes equal to the addresses of a DNS name (a headless Service's pods)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
                addresses = sorted({str(info[4][0]) for info in infos})
                self.set_nodes([(_join(a, bridge_port), _join(a, scheduler_port)) for a in addresses])
            except OSError as exc:
                log.warning("cannot resolve %s: %s", name, exc)
            await asyncio.sleep(every)

    async def close(self) -> None:
        for node in self.nodes.values():
            if node.watch is not None:
                node.watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await node.watch

    async def _follow(self, node: Node) -> None:
        while True:
            try:
                async with self._channels.aio_channel(node.scheduler) as channel:
                    stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
                    async for update in stub.WatchStatus(scheduler_pb2.WatchStatusRequest()):
                        first = node.status is None
                        node.status, node.received_at = update.status, time.monotonic()
                        # From now on the status itself counts these requests.
                        for entry in (*update.status.queue, *update.status.leases):
                            node.picks.pop(entry.request_id, None)
                        if first:
                            log.info("node %s is ready", node.endpoint)
                            self._on_change()
            except grpc.aio.AioRpcError as exc:
                if node.status is not None:
                    log.warning("node %s: its scheduler's watch ended: %s", node.endpoint, exc.code().name)
            node.status = None
            self._on_change()
            await asyncio.sleep(RECONNECT_SECONDS)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
