"""What chat, completions and vision share: the request priority, reading a generation stream, SSE."""

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from pydantic import BaseModel

from multai.common.v1 import common_pb2
from multai.openai.generation import Piece, piece_from_pb
from multai.openai_params import priority_of_level
from rest_bridge.errors import OpenAIError, from_rpc_error, invalid_request
from rest_bridge.serving.rpc import open_stream
from rest_bridge.usage import meter

DEFAULT_PRIORITY_LEVEL = 1


def priority_level(header: str | None, body: int | None, default: int = DEFAULT_PRIORITY_LEVEL) -> int:
    """The queue level from X-MultAI-Priority (wins) or the body's `priority`, else default; 400 if bad."""
    level = body if body is not None else default
    if header is not None:
        try:
            level = int(header)
        except ValueError:
            level = -1
    if priority_of_level(level) is None:
        raise invalid_request("priority must be 0 (urgent), 1 (normal) or 2 (background)", "priority")
    return level


def priority_to_pb(
    header: str | None, body: int | None, default: int = DEFAULT_PRIORITY_LEVEL
) -> common_pb2.Priority.ValueType:
    """priority_level as protobuf."""
    priority = priority_of_level(priority_level(header, body, default))
    assert priority is not None  # priority_level refuses the levels that have none
    return priority


class GenerationStream:
    """A server-streaming generation whose first message has arrived."""

    def __init__(self, call: grpc.aio.UnaryStreamCall, first: Piece) -> None:
        self._call = call
        self.first = first

    @classmethod
    async def open(
        cls, rpc: grpc.aio.UnaryStreamMultiCallable, message: Any, timeout: float, request_id: str
    ) -> "GenerationStream":
        """Starts the generation; raises OpenAIError if it fails before any output."""
        call, first = await open_stream(rpc, message, timeout, request_id)
        return cls(call, piece_from_pb(first))

    async def pieces(self) -> AsyncIterator[Piece]:
        """All pieces, the first included; cancels the RPC if the consumer stops early."""
        try:
            piece = self.first
            usage = meter()
            while True:
                if piece.usage is not None:
                    usage.prompt_tokens += piece.usage.prompt_tokens
                    usage.completion_tokens += piece.usage.completion_tokens
                usage.output_times.append(time.monotonic())
                yield piece
                try:
                    message = await self._call.read()
                except grpc.aio.AioRpcError as exc:
                    raise from_rpc_error(exc) from exc
                if message is grpc.aio.EOF:
                    return
                piece = piece_from_pb(message)
        finally:
            self._call.cancel()

    async def collect(self) -> tuple[str, Piece]:
        """The whole text and the final piece."""
        parts = []
        last = self.first
        async for piece in self.pieces():
            parts.append(piece.delta)
            last = piece
        return "".join(parts), last


def sse_event(payload: BaseModel | dict[str, Any]) -> str:
    """One server-sent event."""
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"data: {data}\n\n"


SSE_DONE = "data: [DONE]\n\n"


async def sse_with_errors(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """Ends every event stream with [DONE]; an error mid-stream becomes an OpenAI error event first."""
    try:
        async for event in events:
            yield event
    except OpenAIError as exc:
        yield sse_event(exc.body())
    yield SSE_DONE
