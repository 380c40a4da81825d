"""The interface every chat engine implements, and the plain data it exchanges."""

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol


class FinishReason(Enum):
    """Why generation ended."""

    STOP = "stop"
    LENGTH = "length"


@dataclass(frozen=True)
class Message:
    """One turn of a conversation."""

    role: str
    content: str
    name: str = ""


@dataclass(frozen=True)
class GenerationParams:
    """Sampling controls; None takes the engine's default."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    n_threads: int | None = None
    # Constrain the reply to JSON: any object, or one that validates against this schema (JSON text).
    json_only: bool = False
    json_schema: str | None = None


class UnsupportedSchemaError(ValueError):
    """The engine cannot turn this JSON Schema into a grammar."""


@dataclass(frozen=True)
class TextDelta:
    """A piece of generated text."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The end of a generation, with its token counts."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


GenerationEvent = TextDelta | Finished


class ChatBackend(Protocol):
    """A loaded-on-demand text generation engine; every method blocks and runs off the event loop."""

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        """Loads the weights; returns the bytes the model takes."""

    def unload(self) -> None:
        """Frees the model's memory."""

    def stream_chat(
        self, messages: list[Message], params: GenerationParams, cancel: threading.Event
    ) -> Iterator[GenerationEvent]:
        """Generates the assistant's reply; stops early once `cancel` is set."""

    def stream_completion(
        self, prompt: str, params: GenerationParams, cancel: threading.Event
    ) -> Iterator[GenerationEvent]:
        """Continues a raw prompt; stops early once `cancel` is set."""
