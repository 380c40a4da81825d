"""What chat and completions share: request fields to protobuf, and reading a generation stream."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
from pydantic import BaseModel

from multai.chat.v1 import chat_pb2
from multai.common.v1 import common_pb2
from multai.openai_params import finish_reason_name, priority_of_level
from rest_bridge.errors import OpenAIError, from_rpc_error, invalid_request
from rest_bridge.protocol.chat import (
    ChatCompletionTokenLogprob,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
    TopLogprob,
)
from rest_bridge.protocol.common import SamplingFields, Usage
from rest_bridge.serving.rpc import open_stream

DEFAULT_PRIORITY_LEVEL = 1


def priority_to_pb(header: str | None, body: int | None) -> common_pb2.Priority.ValueType:
    """The queue priority from X-MultAI-Priority (wins) or the body's `priority`; default level 1."""
    level = body if body is not None else DEFAULT_PRIORITY_LEVEL
    if header is not None:
        try:
            level = int(header)
        except ValueError:
            level = -1
    priority = priority_of_level(level)
    if priority is None:
        raise invalid_request("priority must be 0 (urgent), 1 (normal) or 2 (background)", "priority")
    return priority


def sampling_to_pb(request: SamplingFields, max_tokens: int | None) -> chat_pb2.SamplingParams:
    """The sampling fields as protobuf; unset stays unset so the engine applies its defaults."""
    return chat_pb2.SamplingParams(
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=max_tokens,
        stop=request.stop_list(),
        seed=request.seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        top_k=request.top_k,
        repeat_penalty=request.repeat_penalty,
    )


def engine_to_pb(request: SamplingFields) -> chat_pb2.EngineOptions:
    """The seed design's engine extras as protobuf."""
    return chat_pb2.EngineOptions(n_threads=request.n_threads, n_gpu_layers=request.n_gpu_layers)


@dataclass(frozen=True)
class Piece:
    """One message of a generation stream, in plain Python."""

    model: str
    delta: str
    finish_reason: str | None
    usage: Usage | None
    # Set in a stream's first piece only.
    system_fingerprint: str = ""
    # Only chat completion messages carry these; other generations have one choice and plain text.
    choice_index: int = 0
    tool_calls: tuple[ChoiceDeltaToolCall, ...] = ()
    logprobs: tuple[ChatCompletionTokenLogprob, ...] = ()


def _piece(message: Any) -> Piece:
    usage = None
    if message.HasField("usage"):
        u = message.usage
        usage = Usage(
            prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens, total_tokens=u.total_tokens
        )
    piece = Piece(
        message.model,
        message.delta,
        finish_reason_name(message.finish_reason),
        usage,
        message.system_fingerprint,
    )
    if not isinstance(message, chat_pb2.CreateChatCompletionResponse):
        return piece
    return replace(
        piece,
        choice_index=message.choice_index,
        tool_calls=tuple(_tool_call_delta(c) for c in message.tool_calls),
        logprobs=tuple(_token_logprob(t) for t in message.logprobs),
    )


def _tool_call_delta(delta: chat_pb2.ToolCallDelta) -> ChoiceDeltaToolCall:
    """A piece of a call as OpenAI streams it: id, type and name only in the first piece of each call."""
    return ChoiceDeltaToolCall(
        index=delta.index,
        id=delta.id or None,
        type="function" if delta.id else None,
        function=ChoiceDeltaToolCallFunction(name=delta.name or None, arguments=delta.arguments),
    )


def _token_logprob(logprob: chat_pb2.TokenLogprob) -> ChatCompletionTokenLogprob:
    return ChatCompletionTokenLogprob(
        token=logprob.token,
        logprob=logprob.logprob,
        bytes=list(logprob.bytes),
        top_logprobs=[
            TopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.bytes)) for t in logprob.top_logprobs
        ],
    )


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
        return cls(call, _piece(first))

    async def pieces(self) -> AsyncIterator[Piece]:
        """All pieces, the first included; cancels the RPC if the consumer stops early."""
        try:
            yield self.first
            while True:
                try:
                    message = await self._call.read()
                except grpc.aio.AioRpcError as exc:
                    raise from_rpc_error(exc) from exc
                if message is grpc.aio.EOF:
                    return
                yield _piece(message)
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
