"""/v1/completions: request JSON to protobuf, the ChatService completion stream back to JSON or SSE."""

import time
import uuid
from collections.abc import AsyncIterator

from multai.chat.v1 import chat_pb2, chat_pb2_grpc
from multai.common.v1 import common_pb2
from rest_bridge.errors import invalid_request
from rest_bridge.protocol.completions import Completion, CompletionChoice, CompletionRequest
from rest_bridge.serving.generation import GenerationStream, engine_to_pb, sampling_to_pb, sse_event


def completion_request_to_pb(
    request: CompletionRequest, priority: common_pb2.Priority.ValueType, request_id: str
) -> chat_pb2.CreateCompletionRequest:
    """The JSON body as the ChatService request."""
    return chat_pb2.CreateCompletionRequest(
        model=request.model,
        prompt=single_prompt(request),
        sampling=sampling_to_pb(request, request.max_tokens),
        engine=engine_to_pb(request),
        priority=priority,
        request_id=request_id,
    )


def single_prompt(request: CompletionRequest) -> str:
    """The prompt as one string; batches of prompts are refused for now."""
    if request.suffix is not None:
        raise invalid_request("suffix is not supported", "suffix")
    if isinstance(request.prompt, str):
        return request.prompt
    if len(request.prompt) != 1:
        raise invalid_request("prompt must be a string or a list of exactly one string", "prompt")
    return request.prompt[0]


class CompletionServing:
    """Runs text completions against the chat service."""

    def __init__(self, stub: chat_pb2_grpc.ChatServiceStub, timeout: float) -> None:
        self._stub = stub
        self._timeout = timeout

    async def open(
        self, request: CompletionRequest, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> GenerationStream:
        """Starts the generation; errors before the first token raise OpenAIError."""
        message = completion_request_to_pb(request, priority, request_id)
        return await GenerationStream.open(self._stub.CreateCompletion, message, self._timeout, request_id)

    async def complete(
        self, request: CompletionRequest, stream: GenerationStream, completion_id: str
    ) -> Completion:
        """The whole response."""
        text, last = await stream.collect()
        if request.echo:
            text = single_prompt(request) + text
        return Completion(
            id=completion_id,
            created=int(time.time()),
            model=last.model,
            choices=[CompletionChoice(text=text, finish_reason=last.finish_reason or "stop")],
            usage=last.usage,
            system_fingerprint=stream.first.system_fingerprint,
        )

    async def events(
        self, request: CompletionRequest, stream: GenerationStream, completion_id: str
    ) -> AsyncIterator[str]:
        """The SSE events: text chunks, a finish chunk, and the usage chunk if asked."""
        created = int(time.time())
        model, fingerprint = stream.first.model, stream.first.system_fingerprint
        include_usage = bool(request.stream_options and request.stream_options.include_usage)

        def chunk(text: str, finish_reason: str | None = None) -> str:
            choice = CompletionChoice(text=text, finish_reason=finish_reason)
            return sse_event(
                Completion(
                    id=completion_id,
                    created=created,
                    model=model,
                    choices=[choice],
                    system_fingerprint=fingerprint,
                )
            )

        if request.echo:
            yield chunk(single_prompt(request))
        async for piece in stream.pieces():
            if piece.delta:
                yield chunk(piece.delta)
            if piece.finish_reason is not None:
                yield chunk("", piece.finish_reason)
                if include_usage:
                    yield sse_event(
                        Completion(
                            id=completion_id,
                            created=created,
                            model=model,
                            choices=[],
                            usage=piece.usage,
                            system_fingerprint=fingerprint,
                        )
                    )


def new_completion_id() -> str:
    """An id in OpenAI's format."""
    return f"cmpl-{uuid.uuid4().hex}"
