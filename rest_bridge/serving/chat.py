"""/v1/chat/completions: request JSON to protobuf, the ChatService stream back to OpenAI JSON or SSE."""

import time
import uuid
from collections.abc import AsyncIterator

from multai.chat.v1 import chat_pb2_grpc
from multai.common.v1 import common_pb2
from multai.openai.chat import (
    ChatCompletion,
    ChatCompletionRequest,
)
from multai.openai.generation import ChatChunker, ChatReplies, IncompleteStreamError
from rest_bridge.errors import OpenAIError, invalid_request
from rest_bridge.serving.generation import GenerationStream, sse_event
from rest_bridge.serving.models import ModelsServing
from rest_bridge.serving.vision import VisionServing


class ChatServing:
    """Runs chat completions against the chat service."""

    def __init__(
        self,
        stub: chat_pb2_grpc.ChatServiceStub,
        models: ModelsServing,
        vision: VisionServing,
        timeout: float,
    ) -> None:
        self._stub = stub
        self._models = models
        self._vision = vision
        self._timeout = timeout

    async def open(
        self, request: ChatCompletionRequest, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> GenerationStream:
        """Starts the generation on the chat or the vision service; errors before output raise OpenAIError."""
        card = await self._models.find(request.model, request_id)
        if card is not None and card.modality == "vision":
            return await self._vision.open(request, priority, request_id)
        if card is not None and any(m.image_parts() for m in request.messages):
            vision_models = await self._models.ids_of("vision", request_id)
            raise invalid_request(
                f"'{request.model}' does not take images; use a vision model: "
                f"{', '.join(vision_models) or 'none installed'}",
                "model",
            )
        message = request.to_pb(priority, request_id)
        return await GenerationStream.open(
            self._stub.CreateChatCompletion, message, self._timeout, request_id
        )

    async def complete(self, stream: GenerationStream, completion_id: str) -> ChatCompletion:
        """The whole response, one choice per choice index."""
        replies = ChatReplies()
        async for piece in stream.pieces():
            replies.add(piece)
        try:
            return replies.completion(completion_id, int(time.time()))
        except IncompleteStreamError as exc:
            raise OpenAIError(502, str(exc), type="server_error") from exc

    async def events(
        self, stream: GenerationStream, completion_id: str, include_usage: bool
    ) -> AsyncIterator[str]:
        """The SSE events (see ChatChunker)."""
        chunker = ChatChunker(completion_id, int(time.time()), stream.first, include_usage)
        async for piece in stream.pieces():
            for chunk in chunker.chunks(piece):
                yield sse_event(chunk)


def new_chat_completion_id() -> str:
    """An id in OpenAI's format."""
    return f"chatcmpl-{uuid.uuid4().hex}"
