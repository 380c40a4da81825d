"""The interface of text-to-image engines and the plain data they exchange; no torch here."""

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ImageRequest:
    """One checked request; None takes the model's default."""

    prompt: str
    negative_prompt: str
    n: int
    width: int
    height: int
    num_inference_steps: int | None
    guidance_scale: float | None
    seed: int


@dataclass(frozen=True)
class StepDone:
    """One denoising step of the current image is done; steps count from 1."""

    step: int
    total_steps: int


@dataclass(frozen=True)
class FinishedImage:
    """Image `index` of the request as PNG; it was made with seed `seed` (the request's seed + index)."""

    index: int
    png: bytes
    seed: int


class TextToImageBackend(Protocol):
    """A diffusion engine."""

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        """Loads the weights; returns the bytes the model takes."""

    def unload(self) -> None:
        """Frees the model's memory."""

    def generate(self, request: ImageRequest, cancel: threading.Event) -> Iterator[StepDone | FinishedImage]:
        """Yields each step as it ends and each image once decoded; stops once `cancel` is set."""
