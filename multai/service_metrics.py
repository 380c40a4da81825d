"""The Prometheus metrics of a modality service, named as vLLM's where the meaning is the same.

vLLM's names keep their meaning under MultAI's own prefix (`vllm:time_to_first_token_seconds` is
`multai_time_to_first_token_seconds`, as the scheduler's are `multai_scheduler_*`), so dashboards and alerts
port by renaming the prefix.

The Gateway API Inference Extension's model-server metrics are the service's totals under `multai:` (as
vLLM's are under `vllm:`), so that its endpoint picker, or llm-d's, can route to MultAI: requests waiting and
running, the share of KV cache in use, and the loaded models in the form the protocol uses for LoRA
adapters. docs/scale-out.md lists them.
"""

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# vLLM's buckets for time to first token and inter-token latency, in seconds.
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class ServiceMetrics:
    """One service's metrics, each labelled by model (its canonical id)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests_waiting = Gauge(
            "multai_num_requests_waiting", "Requests waiting for a lease.", ["model"], registry=registry
        )
        self.requests_running = Gauge(
            "multai_num_requests_running", "Requests holding a lease.", ["model"], registry=registry
        )
        self.time_to_first_token = Histogram(
            "multai_time_to_first_token_seconds",
            "From the request's arrival (queue wait included) to its first output.",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.inter_token_latency = Histogram(
            "multai_inter_token_latency_seconds",
            "Between one output message and the next of a stream.",
            ["model"],
            buckets=ITL_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "multai_prompt_tokens", "Prompt tokens processed.", ["model"], registry=registry
        )
        self.generation_tokens = Counter(
            "multai_generation_tokens", "Tokens generated.", ["model"], registry=registry
        )
        self.model_load_seconds = Histogram(
            "multai_model_load_seconds",
            "Time to load a model.",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.audio_seconds = Counter(
            "multai_audio_seconds",
            "Seconds of audio transcribed or translated.",
            ["model"],
            registry=registry,
        )
        self.images = Counter("multai_images", "Images generated.", ["model"], registry=registry)

    def add_pool_metrics(self, state: Callable[[], "PoolState"]) -> None:
        """Exports the Inference Extension's metrics, read from `state` at each scrape."""
        self.registry.register(PoolMetrics(state))

    def stream_clock(self, model: str) -> "StreamClock":
        """A clock for one request's outputs, started now (call it when the request arrives)."""
        return StreamClock(self, model)

    def count_tokens(self, model: str, prompt: int, completion: int) -> None:
        """Counts one finished request's tokens."""
        self.prompt_tokens.labels(model).inc(prompt)
        self.generation_tokens.labels(model).inc(completion)


@dataclass
class StreamClock:
    """Observes time to first token at a request's first output, inter-token latency at the others."""

    metrics: ServiceMetrics
    model: str
    last: float = field(default_factory=time.monotonic)
    started: bool = False

    def output(self) -> None:
        """One output message was sent."""
        now = time.monotonic()
        histogram = self.metrics.inter_token_latency if self.started else self.metrics.time_to_first_token
        histogram.labels(self.model).observe(now - self.last)
        self.last, self.started = now, True


@dataclass(frozen=True)
class PoolState:
    """The service as a whole, as the Inference Extension's endpoint pickers read a model server."""

    waiting: int
    running: int
    # Of the KV cells of the loaded models that have any, the share running requests hold (0 to 1).
    kv_cache_usage: float
    # Loaded models, and models with requests waiting that are not loaded.
    running_models: list[str]
    waiting_models: list[str]
    # The models the service can hold at once, at most (the scheduler's memory decides which).
    max_models: int


class PoolMetrics(Collector):
    """The Inference Extension's model-server metrics, computed when scraped."""

    def __init__(self, state: Callable[[], PoolState]) -> None:
        self._state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._state()
        yield GaugeMetricFamily(
            "multai:num_requests_waiting", "Requests waiting for a lease, all models.", value=state.waiting
        )
        yield GaugeMetricFamily(
            "multai:num_requests_running", "Requests holding a lease, all models.", value=state.running
        )
        yield GaugeMetricFamily(
            "multai:kv_cache_usage_perc",
            "Share (0 to 1) of the loaded models' KV cache held by running requests.",
            value=state.kv_cache_usage,
        )
        # As vLLM's vllm:lora_requests_info: the value is when it was computed, the labels say the rest.
        info = GaugeMetricFamily(
            "multai:lora_requests_info",
            "Loaded models (running_lora_adapters), models waiting to load, and how many fit at most.",
            labels=["running_lora_adapters", "waiting_lora_adapters", "max_lora"],
        )
        info.add_metric(
            [",".join(state.running_models), ",".join(state.waiting_models), str(state.max_models)],
            time.time(),
        )
        yield info
