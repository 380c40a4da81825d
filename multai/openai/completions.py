"""Pydantic models of /v1/completions (the legacy text completion API)."""

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from multai.chat.v1 import chat_pb2
from multai.common.v1 import common_pb2
from multai.openai.common import SamplingFields, Usage, omitted_if_none


class CompletionRequest(SamplingFields):
    """The request body; a list prompt must hold exactly one string for now."""

    model: str = Field(min_length=1)
    prompt: str | list[str] = Field(description="The text to continue.")
    echo: bool = Field(False, description="Prepend the prompt to the completion.")
    suffix: None = Field(None, description="Not supported: no model here fills in the middle.")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("only one prompt per request is supported: a string or a list of one string")
        return value

    def single_prompt(self) -> str:
        """The prompt as one string."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def to_pb(
        self, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> chat_pb2.CreateCompletionRequest:
        """The ChatService request."""
        return chat_pb2.CreateCompletionRequest(
            model=self.model,
            prompt=self.single_prompt(),
            sampling=self.sampling_to_pb(self.max_tokens),
            engine=self.engine_to_pb(),
            priority=priority,
            request_id=request_id,
        )


class CompletionChoice(BaseModel):
    """One choice."""

    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None = None


class Completion(BaseModel):
    """The whole response, and also the shape of each streamed chunk."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = omitted_if_none("Whole responses, and the last chunk with include_usage.")
    system_fingerprint: str
