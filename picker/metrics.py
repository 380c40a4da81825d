"""The picker's Prometheus metrics: what it decided, and how long deciding took."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from picker.policy import Decision, NoEndpoint, Route, Shed

# Deciding is in-memory work on a snapshot: microseconds, up to a millisecond for a large body's JSON.
DECISION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
TIER_NAMES = ("resident", "loadable", "least_loaded")


class PickerMetrics:
    """Decisions by outcome, and the time each took."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "multai_picker_decisions",
            "Requests decided: routed by tier (resident, loadable, least_loaded), shed, or no_endpoint.",
            ["outcome", "priority"],
            registry=self.registry,
        )
        self.decision_seconds = Histogram(
            "multai_picker_decision_seconds",
            "Time to decide one request, body parsing included.",
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        self.ready_nodes = Gauge(
            "multai_picker_ready_nodes", "Nodes whose scheduler watch is live.", registry=self.registry
        )

    def observe(self, decision: Decision, priority: int, seconds: float) -> None:
        match decision:
            case Route(tier=tier):
                outcome = TIER_NAMES[tier]
            case Shed():
                outcome = "shed"
            case NoEndpoint():
                outcome = "no_endpoint"
        self.decisions.labels(outcome, str(priority)).inc()
        self.decision_seconds.observe(seconds)
