"""/v1/chat/completions: request JSON to protobuf, the ChatService stream back to OpenAI JSON or SSE."""

import json
import time
import uuid
from collections.abc import AsyncIterator

from multai.chat.v1 import chat_pb2, chat_pb2_grpc
from multai.common.v1 import common_pb2
from multai.openai.chat import (
    ChatCompletion,
    ChatCompletionRequest,
    ChatCompletionTool,
    ChatMessageParam,
    ResponseFormatParam,
    ToolChoiceParam,
)
from multai.openai.generation import ChatChunker, ChatReplies, IncompleteStreamError
from multai.openai_params import RESPONSE_FORMAT_TYPES, TOOL_CHOICE_MODES
from rest_bridge.errors import OpenAIError, invalid_request
from rest_bridge.serving.generation import GenerationStream, engine_to_pb, sampling_to_pb, sse_event
from rest_bridge.serving.models import ModelsServing
from rest_bridge.serving.vision import VisionServing


def chat_request_to_pb(
    request: ChatCompletionRequest, priority: common_pb2.Priority.ValueType, request_id: str
) -> chat_pb2.CreateChatCompletionRequest:
    """The JSON body as the ChatService request."""
    sampling = sampling_to_pb(request, request.token_limit())
    sampling.logit_bias.update(request.logit_bias or {})
    return chat_pb2.CreateChatCompletionRequest(
        model=request.model,
        messages=[message_to_pb(m) for m in request.messages],
        sampling=sampling,
        engine=engine_to_pb(request),
        priority=priority,
        request_id=request_id,
        response_format=response_format_to_pb(request.response_format),
        tools=[tool_to_pb(t) for t in request.tools or []],
        tool_choice=tool_choice_to_pb(request.tool_choice),
        parallel_tool_calls=request.parallel_tool_calls,
        n=request.n,
        logprobs=chat_pb2.LogprobsOptions(
            enabled=bool(request.logprobs), top_logprobs=request.top_logprobs or 0
        ),
        user=request.user or "",
    )


def message_to_pb(message: ChatMessageParam) -> chat_pb2.ChatMessage:
    """A message, with an assistant's calls and a tool result's call id."""
    return chat_pb2.ChatMessage(
        role=message.role,
        content=message.text(),
        name=message.name or "",
        tool_calls=[
            chat_pb2.ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
            for c in message.tool_calls or []
        ],
        tool_call_id=message.tool_call_id or "",
    )


def tool_to_pb(tool: ChatCompletionTool) -> chat_pb2.FunctionTool:
    """A function tool; its parameters schema travels as JSON text."""
    function = tool.function
    return chat_pb2.FunctionTool(
        name=function.name,
        description=function.description or "",
        parameters_json=json.dumps(function.parameters) if function.parameters is not None else "",
    )


def tool_choice_to_pb(param: ToolChoiceParam | None) -> chat_pb2.ToolChoice:
    """tool_choice as protobuf; unset stays unspecified (auto with tools, none without)."""
    if param is None:
        return chat_pb2.ToolChoice()
    if isinstance(param, str):
        return chat_pb2.ToolChoice(mode=TOOL_CHOICE_MODES[param])
    return chat_pb2.ToolChoice(mode=chat_pb2.TOOL_CHOICE_MODE_FUNCTION, function_name=param.function.name)


def response_format_to_pb(param: ResponseFormatParam | None) -> chat_pb2.ResponseFormat:
    """OpenAI's response_format as protobuf; the schema travels as JSON text."""
    if param is None:
        return chat_pb2.ResponseFormat(type=chat_pb2.RESPONSE_FORMAT_TYPE_TEXT)
    # ResponseFormatParam makes sure a json_schema format carries its schema.
    schema = ""
    if param.type == "json_schema" and param.json_schema is not None:
        schema = json.dumps(param.json_schema.json_schema)
    return chat_pb2.ResponseFormat(type=RESPONSE_FORMAT_TYPES[param.type], json_schema=schema)


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
        message = chat_request_to_pb(request, priority, request_id)
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
