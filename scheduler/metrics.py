"""Prometheus metrics of the scheduler, in a registry of their own (served on --metrics-port)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300)
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class SchedulerMetrics:
    """Queue length and wait per level, grants, evictions, expiries, model load time, memory per device."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_length = Gauge(
            "multai_scheduler_queue_length", "Waiters per requested level.", ["level"], registry=self.registry
        )
        self.queue_wait = Histogram(
            "multai_scheduler_queue_wait_seconds",
            "Time from claim to grant, per requested level.",
            ["level"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.grants = Counter(
            "multai_scheduler_grants", "Leases granted.", ["device"], registry=self.registry
        )
        self.evictions = Counter(
            "multai_scheduler_evictions", "Unload commands sent to make room.", registry=self.registry
        )
        self.expirations = Counter(
            "multai_scheduler_lease_expirations", "Leases revoked at their deadline.", registry=self.registry
        )
        self.refusals = Counter(
            "multai_scheduler_refusals",
            "Claims refused: queue full or model too large.",
            ["reason"],
            registry=self.registry,
        )
        self.model_load = Histogram(
            "multai_model_load_seconds",
            "Model load time reported by the services.",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=self.registry,
        )
        self.memory_used = Gauge(
            "multai_scheduler_memory_used_bytes",
            "Memory taken by resident models.",
            ["device"],
            registry=self.registry,
        )
        self.memory_budget = Gauge(
            "multai_scheduler_memory_budget_bytes",
            "Memory models may take.",
            ["device"],
            registry=self.registry,
        )
        self.active_leases = Gauge(
            "multai_scheduler_active_leases", "Leases held now.", ["device"], registry=self.registry
        )
        self.slots = Gauge(
            "multai_scheduler_batch_slots",
            "Requests a resident model serves at once in one batch.",
            ["model"],
            registry=self.registry,
        )
        self.slots_in_use = Gauge(
            "multai_scheduler_batch_slots_in_use",
            "Slots of a resident model's batch in use now (one per active lease).",
            ["model"],
            registry=self.registry,
        )
