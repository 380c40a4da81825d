"""Response objects with the `openai` SDK's class and attribute names, so reading code ports unchanged.

Chat completions, their chunks, text completions, embeddings, transcripts, images and model objects
are multai.openai's, the objects the REST bridge returns, built by the same code.
"""

import os
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from multai.openai import models as openai_models
from multai.openai.audio import Transcription as Transcription
from multai.openai.audio import TranscriptionVerbose as TranscriptionVerbose
from multai.openai.images import ImagesResponse as ImagesResponse
from multai.openai.models import ModelCard

# A translation has a transcript's shape.
Translation = Transcription
TranslationVerbose = TranscriptionVerbose


class BinaryResponseContent(BaseModel):
    """Encoded audio from `audio.speech.create`: `content` is the file, as the SDK's response has it."""

    content: bytes = Field(repr=False)
    content_type: str = Field(description="The MIME type, e.g. audio/wav.")

    def write_to_file(self, file: str | os.PathLike[str]) -> None:
        """Writes the audio file."""
        Path(file).write_bytes(self.content)


class ImageProgress(BaseModel):
    """A finished denoising step of the whole batch, passed to `on_progress`."""

    step: int
    total_steps: int


# The REST bridge's model object, under the openai SDK's name.
Model = ModelCard


class ModelList(openai_models.ModelList):
    """The models of every configured service, in id order; iterating yields them."""

    def __iter__(self) -> Iterator[ModelCard]:  # type: ignore[override]
        return iter(self.data)
