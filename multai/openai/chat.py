"""Pydantic models of /v1/chat/completions, fields in the order of OpenAI's reference."""

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from multai.chat.v1 import chat_pb2
from multai.common.v1 import common_pb2
from multai.openai.common import OpenAIModel, SamplingFields, TokenId, Usage, omitted_if_none
from multai.openai_params import (
    MAX_CHOICES,
    MAX_LOGIT_BIAS,
    MAX_TOP_LOGPROBS,
    RESPONSE_FORMAT_TYPES,
    SAMPLING_BOUNDS,
    TOOL_CHOICE_MODES,
)


class TextContentPart(OpenAIModel):
    """A text part of a message's content."""

    type: Literal["text"]
    text: str


class ImageUrl(OpenAIModel):
    """Where an image part's picture is: a data URL, or an http(s) URL of an allowed host."""

    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImageContentPart(OpenAIModel):
    """An image part of a message's content; only vision models take these."""

    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextContentPart | ImageContentPart, Field(discriminator="type")]


class FunctionCall(BaseModel):
    """The function a tool call calls."""

    name: str
    arguments: str = Field(description="The arguments as JSON object text.")


class ChatCompletionMessageToolCall(BaseModel):
    """A function call of an assistant message, in a request's history or in a reply."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessageParam(OpenAIModel):
    """One message of the conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ChatCompletionMessageToolCall] | None = Field(
        None, description="The calls an assistant message made."
    )
    tool_call_id: str | None = Field(None, description="For a tool message: the call it answers.")

    @model_validator(mode="after")
    def _tool_fields_fit_role(self) -> "ChatMessageParam":
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    def text(self) -> str:
        """The content as one string; text parts are joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextContentPart))

    def image_parts(self) -> list[ImageContentPart]:
        """The image parts of the content."""
        if not isinstance(self.content, list):
            return []
        return [part for part in self.content if isinstance(part, ImageContentPart)]


class JsonSchemaFormat(OpenAIModel):
    """The schema of response_format json_schema."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    json_schema: dict[str, Any] = Field(alias="schema", description="A JSON Schema object.")
    strict: bool | None = Field(None, description="Always enforced: the reply is generated under a grammar.")


class ResponseFormatParam(OpenAIModel):
    """text, json_object (any JSON object) or json_schema (JSON that validates against a schema)."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> "ResponseFormatParam":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("json_schema is required when type is 'json_schema'")
        return self


class FunctionDefinition(OpenAIModel):
    """A function the model may call."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="A JSON Schema of the arguments object; omitted means no parameters."
    )
    strict: bool | None = Field(None, description="Always enforced when a call is forced (tool_choice).")


class ChatCompletionTool(OpenAIModel):
    """A tool the model may call; functions are the only kind."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(OpenAIModel):
    """The function a named tool_choice forces."""

    name: str


class NamedToolChoice(OpenAIModel):
    """tool_choice that forces a call of one function."""

    type: Literal["function"]
    function: NamedFunction


ToolChoiceParam = Literal["none", "auto", "required"] | NamedToolChoice
Bias = Annotated[float, Field(ge=-MAX_LOGIT_BIAS, le=MAX_LOGIT_BIAS)]


class ChatCompletionRequest(SamplingFields):
    """The request body."""

    messages: list[ChatMessageParam] = Field(min_length=1)
    model: str = Field(min_length=1)
    # JSON keys are strings; pydantic reads them as the token ids they spell.
    logit_bias: dict[TokenId, Bias] | None = Field(
        None, description="Added to the logits of these token ids; -100 bans a token."
    )
    logprobs: bool | None = Field(None, description="Return the log probability of each generated token.")
    max_completion_tokens: Annotated[int, SAMPLING_BOUNDS["max_tokens"].interval()] | None = Field(
        None, description="Replaces max_tokens in newer clients."
    )
    # The chat service checks the same limit, so that gRPC callers meet it.
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="How many choices to generate.")
    parallel_tool_calls: bool | None = Field(None, description="Whether one reply may call several tools.")
    response_format: ResponseFormatParam | None = None
    tool_choice: ToolChoiceParam | None = Field(
        None, description="none, auto (the default with tools), required, or a named function."
    )
    tools: list[ChatCompletionTool] | None = None
    top_logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="With logprobs: also return this many likeliest tokens per position, 0 to 20.",
    )

    def token_limit(self) -> int | None:
        """max_completion_tokens, else max_tokens."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def chat_sampling_to_pb(self) -> chat_pb2.SamplingParams:
        """The sampling fields with the token limit and logit_bias."""
        sampling = self.sampling_to_pb(self.token_limit())
        sampling.logit_bias.update(self.logit_bias or {})
        return sampling

    def to_pb(
        self, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> chat_pb2.CreateChatCompletionRequest:
        """The ChatService request."""
        return chat_pb2.CreateChatCompletionRequest(
            model=self.model,
            messages=[message_to_pb(m) for m in self.messages],
            sampling=self.chat_sampling_to_pb(),
            engine=self.engine_to_pb(),
            priority=priority,
            request_id=request_id,
            response_format=response_format_to_pb(self.response_format),
            tools=[tool_to_pb(t) for t in self.tools or []],
            tool_choice=tool_choice_to_pb(self.tool_choice),
            parallel_tool_calls=self.parallel_tool_calls,
            n=self.n,
            logprobs=chat_pb2.LogprobsOptions(
                enabled=bool(self.logprobs), top_logprobs=self.top_logprobs or 0
            ),
            user=self.user or "",
        )


class ChatCompletionMessage(BaseModel):
    """The assistant's reply; `refusal` is always null (no model refuses through it here)."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ChatCompletionMessageToolCall] | None = omitted_if_none()


class TopLogprob(BaseModel):
    """One of the likeliest tokens at a position."""

    token: str
    logprob: float
    # A token may hold part of a character, so its UTF-8 bytes tell more than its text.
    bytes: list[int] | None


class ChatCompletionTokenLogprob(BaseModel):
    """A generated token's log probability, with the likeliest tokens at its position, likeliest first."""

    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    """The log probabilities of a choice's tokens."""

    content: list[ChatCompletionTokenLogprob] | None
    refusal: None = None


class ChatCompletionChoice(BaseModel):
    """One choice of a whole response."""

    index: int = 0
    message: ChatCompletionMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    """The whole (non-streamed) response."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage
    system_fingerprint: str


class ChoiceDeltaToolCallFunction(BaseModel):
    """A piece of a streamed call: the name in its first piece, then pieces of the arguments' JSON."""

    name: str | None = omitted_if_none()
    arguments: str | None = omitted_if_none()


class ChoiceDeltaToolCall(BaseModel):
    """A piece of a streamed tool call; pieces with the same index make one call, and only the first
    carries its id, type and name."""

    index: int
    id: str | None = omitted_if_none()
    type: Literal["function"] | None = omitted_if_none()
    function: ChoiceDeltaToolCallFunction | None = omitted_if_none()


class ChoiceDelta(BaseModel):
    """The change carried by one chunk: only what changed (the last chunk of a choice has an empty one)."""

    role: Literal["assistant"] | None = omitted_if_none()
    content: str | None = omitted_if_none()
    tool_calls: list[ChoiceDeltaToolCall] | None = omitted_if_none()


class ChatCompletionChunkChoice(BaseModel):
    """One choice of a chunk."""

    index: int = 0
    delta: ChoiceDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed response."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]
    usage: Usage | None = omitted_if_none("Only in the last chunk, when stream_options.include_usage is set.")
    system_fingerprint: str


# --- the parts of a request, to protobuf -------------------------------------------------------


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
