"""/v1/completions: request JSON to protobuf, the ChatService completion stream back to JSON or SSE."""

import time
import uuid
from collections.abc import AsyncIterator

from multai.chat.v1 import chat_pb2_grpc
from multai.common.v1 import common_pb2
from multai.openai.completions import Completion, CompletionRequest
from multai.openai.generation import CompletionChunker, IncompleteStreamError, whole_completion
from rest_bridge.errors import OpenAIError
from rest_bridge.serving.generation import GenerationStream, sse_event


class CompletionServing:
    """Runs text completions against the chat service."""

    def __init__(self, stub: chat_pb2_grpc.ChatServiceStub, timeout: float) -> None:
        self._stub = stub
        self._timeout = timeout

    async def open(
        self, request: CompletionRequest, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> GenerationStream:
        """Starts the generation; errors before the first token raise OpenAIError."""
        message = request.to_pb(priority, request_id)
        return await GenerationStream.open(self._stub.CreateCompletion, message, self._timeout, request_id)

    async def complete(
        self, request: CompletionRequest, stream: GenerationStream, completion_id: str
    ) -> Completion:
        """The whole response."""
        text, last = await stream.collect()
        if request.echo:
            text = request.single_prompt() + text
        try:
            return whole_completion(completion_id, int(time.time()), stream.first, text, last)
        except IncompleteStreamError as exc:
            raise OpenAIError(502, str(exc), type="server_error") from exc

    async def events(
        self, request: CompletionRequest, stream: GenerationStream, completion_id: str
    ) -> AsyncIterator[str]:
        """The SSE events (see CompletionChunker), after the echoed prompt if asked."""
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        chunker = CompletionChunker(completion_id, int(time.time()), stream.first, include_usage)
        if request.echo:
            yield sse_event(chunker.text(request.single_prompt()))
        async for piece in stream.pieces():
            for chunk in chunker.chunks(piece):
                yield sse_event(chunk)


def new_completion_id() -> str:
    """An id in OpenAI's format."""
    return f"cmpl-{uuid.uuid4().hex}"
