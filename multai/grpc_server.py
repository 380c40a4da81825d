"""The one gRPC server bootstrap every process uses: mutual TLS, interceptor, health, graceful SIGTERM."""

import asyncio
import inspect
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from multai.errors import MultaiError
from multai.mesh_tls import server_credentials
from multai.settings import GrpcServiceSettings, SettingsT, load_settings
from multai.tracing import context_from, flush_traces, setup_tracing, tracer

log = logging.getLogger(__name__)

Behavior = Callable[..., Any]


async def _abort_with(context: grpc.aio.ServicerContext, exc: MultaiError) -> None:
    await context.abort(exc.status, exc.message, trailing_metadata=exc.trailing_metadata())


async def _abort_internal(context: grpc.aio.ServicerContext, method: str) -> None:
    log.exception("unexpected error in %s", method)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the service log")


async def _abort_timed_out(context: grpc.aio.ServicerContext, method: str, limit: float | None) -> None:
    # Without a limit, a TimeoutError came from inside the service: an internal error like any other.
    if limit is None:
        await _abort_internal(context, method)
        return
    await context.abort(
        grpc.StatusCode.DEADLINE_EXCEEDED, f"the request ran longer than this service's limit of {limit:g}s"
    )


def _server_span(method: str, context: grpc.aio.ServicerContext, traced: bool) -> trace.Span:
    """The span of a served call, a child of the caller's; a non-recording one when not traced."""
    if not traced:
        return trace.INVALID_SPAN
    return tracer.start_span(method, context_from(context.invocation_metadata()), SpanKind.SERVER)


def _wrap(behavior: Behavior, method: str, max_seconds: float | None, traced: bool) -> Behavior:
    """Wraps one RPC behaviour so that domain errors become their status and anything else INTERNAL, and
    a call running past max_seconds is cancelled (its work stops, its lease is released) with
    DEADLINE_EXCEEDED, whatever deadline the caller set."""
    if inspect.isasyncgenfunction(behavior):

        async def stream_wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            deadline = None if max_seconds is None else asyncio.get_running_loop().time() + max_seconds
            items = behavior(request, context)
            span = _server_span(method, context, traced)
            try:
                while True:
                    # Only the service's own work is timed, never the wait for the client to take an item.
                    async with asyncio.timeout_at(deadline):
                        try:
                            if span.is_recording():
                                # The span is current only while the service works, not across yields.
                                with trace.use_span(
                                    span,
                                    end_on_exit=False,
                                    record_exception=False,
                                    set_status_on_exception=False,
                                ):
                                    item = await anext(items)
                            else:
                                # Tracing off: nothing to attach for each token of a stream.
                                item = await anext(items)
                        except StopAsyncIteration:
                            return
                    yield item
            except MultaiError as exc:
                await _abort_with(context, exc)
            except grpc.aio.AbortError:
                raise
            except TimeoutError:
                await _abort_timed_out(context, method, max_seconds)
            except Exception:
                await _abort_internal(context, method)
            finally:
                span.end()
                await items.aclose()

        return stream_wrapper

    async def unary_wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            with trace.use_span(_server_span(method, context, traced), end_on_exit=True):
                async with asyncio.timeout(max_seconds):
                    return await behavior(request, context)
        except MultaiError as exc:
            await _abort_with(context, exc)
        except grpc.aio.AbortError:
            raise
        except TimeoutError:
            await _abort_timed_out(context, method, max_seconds)
        except Exception:
            await _abort_internal(context, method)

    return unary_wrapper


class DomainErrorInterceptor(grpc.aio.ServerInterceptor):
    """The single place where servicers' typed errors become gRPC status codes, and where the service's
    longest run time per call is enforced (max_call_seconds; gRPC's own health and reflection are exempt:
    health watches are meant to stay open)."""

    def __init__(self, max_call_seconds: float | None = None) -> None:
        self._max_call_seconds = max_call_seconds

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        # Health checks and reflection run neither under the limit nor in traces: probes poll them.
        infrastructure = method.startswith("/grpc.")
        limit = None if infrastructure else self._max_call_seconds

        def wrap(behavior: Behavior) -> Behavior:
            return _wrap(behavior, method, limit, not infrastructure)

        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary), **codec)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream), **codec)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary), **codec)
        return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream), **codec)


def configure_logging(level: str) -> None:
    """Plain line logs on stderr; the supervisor prefixes them with the process name."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every health poll at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def run_process(
    settings_cls: type[SettingsT], prog: str, serve: Callable[[SettingsT], Coroutine[Any, Any, None]]
) -> None:
    """What every gRPC process's `python -m` does: settings from file, env and flags; logging; serve."""
    settings = load_settings(settings_cls, sys.argv[1:], prog)
    configure_logging(settings.log_level)
    # "python -m services.chat" is the chat service's process; "python -m scheduler" the scheduler's.
    setup_tracing(prog.rpartition(".")[2].rpartition(" ")[2], settings.tracing)
    asyncio.run(serve(settings))


async def run_grpc_server(
    settings: GrpcServiceSettings,
    add_servicers: Callable[[grpc.aio.Server], Iterable[str]],
    *,
    on_started: Callable[[], Awaitable[None]] | None = None,
    on_stopping: Callable[[], Awaitable[None]] | None = None,
    max_call_seconds: float | None = None,
    health_servicer: health.aio.HealthServicer | None = None,
) -> None:
    """Serves until SIGTERM or SIGINT.

    add_servicers registers the servicers and returns their full service names. Health says NOT_SERVING
    until on_started has finished (e.g. registration with the scheduler), and again as soon as a stop
    signal arrives; then in-flight RPCs get the grace period and on_stopping releases what is held. The port
    speaks mutual TLS (`multai.mesh_tls`) unless `mesh_tls` is off; reflection is served only when
    `grpc_reflection` is on. A call running past max_call_seconds is cancelled with DEADLINE_EXCEEDED.
    A process with health states of its own passes the health_servicer it sets them on.
    """
    server = grpc.aio.server(
        interceptors=[DomainErrorInterceptor(max_call_seconds)],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
        ],
    )
    service_names = list(add_servicers(server))
    health_servicer = health_servicer or health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.grpc_reflection:
        reflection.enable_server_reflection(
            [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *service_names]:
        await health_servicer.set(name, not_serving)

    address = f"{settings.host}:{settings.port}"
    if settings.mesh_tls:
        server.add_secure_port(address, server_credentials(settings.mesh_certs_dir()))
    else:
        log.warning("mesh_tls is off: anyone who reaches %s can call every RPC", address)
        server.add_insecure_port(address)
    await server.start()
    # Kubernetes' grpc probes present no client certificate: a plaintext port that serves health alone
    # reveals nothing more than the probe needs.
    health_server = grpc.aio.server()
    if settings.health_port:
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_server.add_insecure_port(f"{settings.host}:{settings.health_port}")
        await health_server.start()
    log.info("listening on %s", address)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    try:
        if on_started is not None:
            await on_started()
        for name in ["", *service_names]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s", ", ".join(service_names))
        await stop.wait()
    finally:
        log.info("stopping: health NOT_SERVING, %.1fs grace", settings.shutdown_grace_seconds)
        await health_servicer.enter_graceful_shutdown()
        await server.stop(settings.shutdown_grace_seconds)
        await health_server.stop(0)
        flush_traces()
        if on_stopping is not None:
            await on_stopping()
