"""Optional OpenTelemetry tracing, off by default: one trace from the bridge to the service to the scheduler.

The W3C trace context travels in gRPC metadata: `trace_context_interceptors` put it on every call a mesh
channel makes, and `DomainErrorInterceptor` opens each served call's span from it. The bridge's HTTP spans
are FastAPI's own, which it makes once a tracer provider is set. With tracing off the tracer is
OpenTelemetry's no-op one, and nothing is added to a call.
"""

import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import grpc
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

TracingMode = Literal["off", "console", "otlp"]
tracer = trace.get_tracer("multai")


def _one_line(span: ReadableSpan) -> str:
    line: str = span.to_json(indent=None)
    return line + os.linesep


def setup_tracing(process: str, mode: TracingMode) -> None:
    """Exports this process's spans: to stdout as JSON lines ("console"), or by OTLP to the collector in
    OTEL_EXPORTER_OTLP_ENDPOINT ("otlp", with the `tracing` extra installed)."""
    if mode == "off":
        return
    exporter: SpanExporter
    if mode == "console":
        exporter = ConsoleSpanExporter(formatter=_one_line)
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": f"multai-{process}"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def context_from(metadata: Iterable[tuple[str, str | bytes]] | Mapping[str, str] | None) -> context.Context:
    """The trace context a call or request carries (an empty one when it carries none)."""
    items = metadata.items() if isinstance(metadata, Mapping) else metadata or ()
    carrier = {key: value.decode() if isinstance(value, bytes) else value for key, value in items}
    return propagate.extract(carrier)


def _with_trace_context(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if not carrier:
        return details
    metadata = [*(details.metadata or ()), *carrier.items()]
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*metadata),
        details.credentials,
        details.wait_for_ready,
    )


# grpc.aio files an interceptor under the first kind it is an instance of, so each kind is a class.
class _UnaryUnaryTraceContext(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_trace_context(details), request)


class _UnaryStreamTraceContext(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_trace_context(details), request)


class _StreamUnaryTraceContext(grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_trace_context(details), requests)


class _StreamStreamTraceContext(grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_trace_context(details), requests)


def trace_context_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that add the current trace context to every call of a channel, of every kind."""
    return [
        _UnaryUnaryTraceContext(),
        _UnaryStreamTraceContext(),
        _StreamUnaryTraceContext(),
        _StreamStreamTraceContext(),
    ]


def flush_traces() -> None:
    """Exports the spans still buffered (at shutdown, before the process ends)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush()
