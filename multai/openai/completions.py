"""Pydantic models of /v1/completions (the legacy text completion API)."""

from typing import Literal

from pydantic import BaseModel, Field

from multai.openai.common import SamplingFields, Usage, omitted_if_none


class CompletionRequest(SamplingFields):
    """The request body; a list prompt must hold exactly one string for now."""

    model: str = Field(min_length=1)
    prompt: str | list[str] = Field(description="The text to continue.")
    echo: bool = Field(False, description="Prepend the prompt to the completion.")
    suffix: str | None = None


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
