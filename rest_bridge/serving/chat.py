"""/v1/chat/completions: request JSON to protobuf, the ChatService stream back to OpenAI JSON or SSE."""

import json
import time
import uuid
from collections.abc import AsyncIterator

from multai.chat.v1 import chat_pb2, chat_pb2_grpc
from multai.common.v1 import common_pb2
from rest_bridge.protocol.chat import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChoiceDelta,
    ResponseFormatParam,
)
from rest_bridge.serving.generation import GenerationStream, engine_to_pb, sampling_to_pb, sse_event


def chat_request_to_pb(
    request: ChatCompletionRequest, priority: common_pb2.Priority.ValueType, request_id: str
) -> chat_pb2.CreateChatCompletionRequest:
    """The JSON body as the ChatService request."""
    return chat_pb2.CreateChatCompletionRequest(
        model=request.model,
        messages=[
            chat_pb2.ChatMessage(role=m.role, content=m.text(), name=m.name or "") for m in request.messages
        ],
        sampling=sampling_to_pb(request, request.token_limit()),
        engine=engine_to_pb(request),
        priority=priority,
        request_id=request_id,
        response_format=response_format_to_pb(request.response_format),
    )


def response_format_to_pb(param: ResponseFormatParam | None) -> chat_pb2.ResponseFormat:
    """OpenAI's response_format as protobuf; the schema travels as JSON text."""
    if param is None or param.type == "text":
        return chat_pb2.ResponseFormat(type=chat_pb2.RESPONSE_FORMAT_TYPE_TEXT)
    if param.type == "json_object" or param.json_schema is None:
        return chat_pb2.ResponseFormat(type=chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
    return chat_pb2.ResponseFormat(
        type=chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=json.dumps(param.json_schema.json_schema)
    )


class ChatServing:
    """Runs chat completions against the chat service."""

    def __init__(self, stub: chat_pb2_grpc.ChatServiceStub, timeout: float) -> None:
        self._stub = stub
        self._timeout = timeout

    async def open(
        self, request: ChatCompletionRequest, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> GenerationStream:
        """Starts the generation; errors before the first token raise OpenAIError."""
        message = chat_request_to_pb(request, priority, request_id)
        return await GenerationStream.open(
            self._stub.CreateChatCompletion, message, self._timeout, request_id
        )

    async def complete(self, stream: GenerationStream, completion_id: str) -> ChatCompletion:
        """The whole response."""
        text, last = await stream.collect()
        assert last.usage is not None, "the final message of a generation carries usage"
        return ChatCompletion(
            id=completion_id,
            created=int(time.time()),
            model=last.model,
            choices=[
                ChatCompletionChoice(
                    message=ChatCompletionMessage(content=text), finish_reason=last.finish_reason or "stop"
                )
            ],
            usage=last.usage,
        )

    async def events(
        self, stream: GenerationStream, completion_id: str, include_usage: bool
    ) -> AsyncIterator[str]:
        """The SSE events: a role chunk, content chunks, a finish chunk, and the usage chunk if asked."""
        created = int(time.time())
        model = stream.first.model

        def chunk(delta: ChoiceDelta, finish_reason: str | None = None) -> str:
            return sse_event(
                ChatCompletionChunk(
                    id=completion_id,
                    created=created,
                    model=model,
                    choices=[ChatCompletionChunkChoice(delta=delta, finish_reason=finish_reason)],
                )
            )

        yield chunk(ChoiceDelta(role="assistant", content=""))
        async for piece in stream.pieces():
            if piece.delta:
                yield chunk(ChoiceDelta(content=piece.delta))
            if piece.finish_reason is not None:
                yield chunk(ChoiceDelta(), piece.finish_reason)
                if include_usage:
                    yield sse_event(
                        ChatCompletionChunk(
                            id=completion_id, created=created, model=model, choices=[], usage=piece.usage
                        )
                    )


def new_chat_completion_id() -> str:
    """An id in OpenAI's format."""
    return f"chatcmpl-{uuid.uuid4().hex}"
