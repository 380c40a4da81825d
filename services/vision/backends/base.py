"""The plain data a vision-language engine exchanges with the servicer; light enough to import anywhere."""

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True)
class VisionTurn:
    """One turn of a conversation: text parts and encoded images (PNG, JPEG, WebP, GIF bytes), in order."""

    # "system", "user" or "assistant"; the servicer has checked it.
    role: str
    parts: list[str | bytes]


@dataclass(frozen=True)
class VisionSampling:
    """Sampling controls; None takes the engine's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VisionDone:
    """The end of a reply: why it ended ("stop" or "length") and its token counts."""

    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


class VisionBackend(Protocol):
    """An image-and-text chat engine."""

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        """Loads the weights; returns the bytes the model takes."""

    def unload(self) -> None:
        """Frees the model's memory."""

    def generate(
        self, turns: list[VisionTurn], sampling: VisionSampling, cancel: threading.Event
    ) -> Iterator[str | VisionDone]:
        """Streams the reply as text pieces, then a VisionDone; stops once `cancel` is set."""
