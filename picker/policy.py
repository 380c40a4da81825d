"""The picking rule: from each node's scheduler status, the node that serves a request for a model.

Tiers, best first:
0. the model is resident there with a free batch slot (or the picker just sent it there);
1. the node can load it without evicting a busy model (into free memory, or in place of idle models);
2. otherwise the least loaded node (requests running and waiting).
Within a tier the shortest queue wins, then the node where the model is resident, then the node picked
least recently (so equal nodes share the work).

Other inference routers assume one model per pool and score queues and caches; MultAI's nodes each hold a
few whole models, and a request sent where its model is not loaded costs a swap: seconds of loading, and
the eviction of whatever that node was serving.
"""

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from multai.scheduler.v1 import scheduler_pb2

URGENT, NORMAL, BACKGROUND = 0, 1, 2


@dataclass(frozen=True)
class PickRules:
    """The thresholds of the rule (PickerSettings holds them)."""

    busy_window_seconds: float = 30.0
    shed_background_waiting: int = 8
    shed_normal_waiting: int = 64
    max_fallbacks: int = 2

    def shed_at(self, priority: int) -> int | None:
        """Waiting requests on every node past which a request of this priority is shed; None: never."""
        return {BACKGROUND: self.shed_background_waiting, NORMAL: self.shed_normal_waiting}.get(priority)


@dataclass
class NodeView:
    """One node as its scheduler last reported it, plus the requests the picker sent since."""

    endpoint: str
    status: scheduler_pb2.GetStatusResponse
    # Seconds since the status arrived (idle times in it have grown by this much).
    age_seconds: float = 0.0
    # Requests per model the picker sent here that the status may not show yet.
    pending: Counter[str] = field(default_factory=Counter)
    last_picked: float = 0.0

    def canonical(self, name: str) -> str | None:
        """The model id a request's name means on this node, by id or alias."""
        for service in self.status.services:
            for footprint in service.models:
                if name == footprint.model or name in footprint.aliases:
                    return footprint.model
        return None

    def footprint(self, model: str) -> scheduler_pb2.ModelFootprint | None:
        for service in self.status.services:
            for footprint in service.models:
                if footprint.model == model:
                    return footprint
        return None

    @property
    def waiting(self) -> int:
        return len(self.status.queue) + self.pending.total()

    @property
    def running(self) -> int:
        return len(self.status.leases)

    def resident(self, model: str) -> scheduler_pb2.ResidentModelStatus | None:
        for entry in self.status.resident_models:
            if entry.model == model and not entry.unloading:
                return entry
        return None

    def is_busy(self, entry: scheduler_pb2.ResidentModelStatus, rules: PickRules) -> bool:
        """In use, wanted by a waiter, just picked, or used within the busy window."""
        return (
            entry.slots_in_use > 0
            or self.pending[entry.model] > 0
            or any(waiter.model == entry.model for waiter in self.status.queue)
            or entry.idle_seconds + self.age_seconds < rules.busy_window_seconds
        )

    def tier(self, model: str, rules: PickRules) -> int:
        entry = self.resident(model)
        footprint = self.footprint(model)
        if entry is not None and entry.slots_in_use + self.pending[model] < max(1, entry.slots):
            return 0
        # Requests sent here just now make the model as good as resident, until its slots are taken.
        if entry is None and 0 < self.pending[model] < max(1, footprint.slots if footprint else 1):
            return 0
        if entry is None and not self.pending[model] and self._fits_without_evicting_busy(model, rules):
            return 1
        return 2

    def _fits_without_evicting_busy(self, model: str, rules: PickRules) -> bool:
        footprint = self.footprint(model)
        if footprint is None:
            return False
        for device in self.status.devices:
            idle = sum(
                entry.size_bytes
                for entry in self.status.resident_models
                if entry.device == device.device and not entry.unloading and not self.is_busy(entry, rules)
            )
            if footprint.size_bytes <= device.budget_bytes - device.used_bytes + idle:
                return True
        return False


@dataclass(frozen=True)
class Route:
    """Send the request to endpoints[0]; the others are fallbacks, in order, for retries."""

    endpoints: list[str]
    tier: int
    model: str | None


@dataclass(frozen=True)
class Shed:
    """Refuse with 429: every node is saturated for this priority."""

    waiting: int


@dataclass(frozen=True)
class NoEndpoint:
    """Refuse with 503: no node is ready (or none of the subset the proxy allowed)."""

    reason: str


Decision = Route | Shed | NoEndpoint


def choose(
    nodes: Sequence[NodeView],
    model_name: str | None,
    priority: int,
    rules: PickRules,
    subset: Sequence[str] | None = None,
) -> Decision:
    """The decision for one request (model_name None: a request for no model, e.g. GET /v1/models)."""
    if subset is not None:
        allowed = set(subset)
        nodes = [node for node in nodes if node.endpoint in allowed]
    if not nodes:
        return NoEndpoint("no node is ready" if subset is None else "no ready node in the allowed subset")
    models: Mapping[str, str | None] = {
        node.endpoint: node.canonical(model_name) if model_name else None for node in nodes
    }
    # Only nodes that serve the model compete; a name no node knows goes anywhere, to be refused there.
    serving = [node for node in nodes if models[node.endpoint] is not None]
    candidates = serving or list(nodes)
    shed_at = rules.shed_at(priority)
    if shed_at is not None and min(node.waiting for node in candidates) >= shed_at:
        return Shed(min(node.waiting for node in candidates))

    def key(node: NodeView) -> tuple[int, int, int, int, bool, float]:
        model = models[node.endpoint]
        tier = node.tier(model, rules) if model is not None else 2
        load = node.waiting + node.running
        resident = _resident(node, model)
        return (tier, load if tier == 2 else 0, node.waiting, node.running, not resident, node.last_picked)

    ranked = sorted(candidates, key=key)
    best = ranked[0]
    return Route(
        [node.endpoint for node in ranked[: 1 + rules.max_fallbacks]], key(best)[0], models[best.endpoint]
    )


def _resident(node: NodeView, model: str | None) -> bool:
    return model is not None and (node.resident(model) is not None or node.pending[model] > 0)
