"""Pydantic models of /v1/chat/completions, fields in the order of OpenAI's reference."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rest_bridge.protocol.common import OpenAIModel, SamplingFields, Usage


class TextContentPart(OpenAIModel):
    """A text part of a message's content."""

    type: Literal["text"]
    text: str


class ChatMessageParam(OpenAIModel):
    """One message of the conversation."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The content as one string; text parts are joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


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


class ChatCompletionRequest(SamplingFields):
    """The request body."""

    messages: list[ChatMessageParam] = Field(min_length=1)
    model: str = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="Replaces max_tokens in newer clients.")
    # Declared so that they are refused rather than silently ignored until the engine supports them
    # (response_format is supported).
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    response_format: ResponseFormatParam | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> "ChatCompletionRequest":
        unsupported = {
            "logit_bias": bool(self.logit_bias),
            "logprobs": bool(self.logprobs),
            "tools": bool(self.tools),
            "tool_choice": self.tool_choice not in (None, "none"),
        }
        for name, used in unsupported.items():
            if used:
                raise ValueError(f"'{name}' is not supported yet")
        return self

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def token_limit(self) -> int | None:
        """max_completion_tokens, else max_tokens."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class ChatCompletionMessage(BaseModel):
    """The assistant's reply."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatCompletionChoice(BaseModel):
    """One choice of a whole response."""

    index: int = 0
    message: ChatCompletionMessage
    logprobs: None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    """The whole (non-streamed) response."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ChoiceDelta(BaseModel):
    """The change carried by one chunk."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatCompletionChunkChoice(BaseModel):
    """One choice of a chunk."""

    index: int = 0
    delta: ChoiceDelta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed response."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
