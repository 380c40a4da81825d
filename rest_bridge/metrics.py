"""The bridge's Prometheus metrics: requests by route, model and status, and latency as the client sees it.

Names follow vLLM's where the meaning is the same, under MultAI's prefix (see multai/service_metrics.py).
"""

import itertools
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from multai.service_metrics import ITL_BUCKETS, TTFT_BUCKETS
from rest_bridge.usage import RequestUsage, current_usage

# Paths that matched no route are one label value, so that scanners cannot grow the label set.
UNMATCHED_ROUTE = "unmatched"
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0, 600.0)


class BridgeMetrics:
    """The bridge's request metrics, on the registry that also holds the API keys' usage."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["route", "model"]
        self.requests = Counter(
            "multai_http_requests",
            "HTTP requests by route, model and status.",
            [*labels, "status"],
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "multai_time_to_first_token_seconds",
            "From the request's arrival at the bridge to its first output passed to the client.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.inter_token_latency = Histogram(
            "multai_inter_token_latency_seconds",
            "Between one output passed to the client and the next.",
            labels,
            buckets=ITL_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "multai_prompt_tokens", "Prompt tokens of the requests answered.", labels, registry=registry
        )
        self.generation_tokens = Counter(
            "multai_generation_tokens",
            "Tokens generated for the requests answered.",
            labels,
            registry=registry,
        )
        self.e2e_latency = Histogram(
            "multai_e2e_request_latency_seconds",
            "From the request's arrival to its last byte.",
            labels,
            buckets=E2E_BUCKETS,
            registry=registry,
        )

    def observe(self, route: str, status: int, usage: RequestUsage, ended: float) -> None:
        """Records one finished request."""
        model = usage.model or "none"
        self.requests.labels(route, model, str(status)).inc()
        self.e2e_latency.labels(route, model).observe(ended - usage.started)
        self.prompt_tokens.labels(route, model).inc(usage.prompt_tokens)
        self.generation_tokens.labels(route, model).inc(usage.completion_tokens)
        times = usage.output_times
        if times:
            self.time_to_first_token.labels(route, model).observe(times[0] - usage.started)
            itl = self.inter_token_latency.labels(route, model)
            for earlier, later in itertools.pairwise(times):
                itl.observe(later - earlier)


class RequestMetricsMiddleware:
    """Gives every request its usage record and, once the response has ended, records its metrics."""

    def __init__(self, app: ASGIApp, metrics: BridgeMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        usage = RequestUsage()
        token = current_usage.set(usage)
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_with_status)
        finally:
            current_usage.reset(token)
            route = scope.get("route")
            path = getattr(route, "path", UNMATCHED_ROUTE)
            self._metrics.observe(path, status, usage, time.monotonic())
