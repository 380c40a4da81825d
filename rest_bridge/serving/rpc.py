"""Calling the services: every call carries its deadline and the request id, and fails as OpenAIError."""

from typing import Any

import grpc

from rest_bridge.errors import OpenAIError, from_rpc_error


def request_metadata(request_id: str) -> tuple[tuple[str, str], ...]:
    """The gRPC metadata that carries the request id into the service's logs."""
    return (("x-request-id", request_id),)


async def call_unary(
    rpc: grpc.aio.UnaryUnaryMultiCallable, message: Any, timeout: float, request_id: str
) -> Any:
    """One unary call."""
    try:
        return await rpc(message, timeout=timeout, metadata=request_metadata(request_id))
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from exc


async def open_stream(
    rpc: grpc.aio.UnaryStreamMultiCallable, message: Any, timeout: float, request_id: str
) -> tuple[grpc.aio.UnaryStreamCall, Any]:
    """Starts a server stream and waits for its first message.

    Waiting for it first means errors found before any output (unknown model, bad parameters, full queue)
    become proper HTTP errors instead of failures in the middle of a response body.
    """
    call = rpc(message, timeout=timeout, metadata=request_metadata(request_id))
    try:
        first = await call.read()
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from exc
    except BaseException:
        call.cancel()
        raise
    if first is grpc.aio.EOF:
        raise OpenAIError(502, "the service ended the stream without output", type="server_error")
    return call, first
