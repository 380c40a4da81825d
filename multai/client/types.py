"""Response objects with the `openai` SDK's class and attribute names, so reading code ports unchanged.

Chat completions, their chunks and text completions are multai.openai's, the objects the REST bridge
returns, built by the same code.
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class Embedding(BaseModel):
    """The vector of one input: floats, or base64 of little-endian float32 when asked for."""

    embedding: list[float] | str
    index: int
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(BaseModel):
    """Token counts of an embeddings request."""

    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    """The vectors, in input order."""

    data: list[Embedding]
    model: str
    object: Literal["list"] = "list"
    usage: EmbeddingUsage


class Transcription(BaseModel):
    """A transcript (response_format "json")."""

    text: str


class TranscriptionWord(BaseModel):
    """One word with its time span in seconds."""

    end: float
    start: float
    word: str


class TranscriptionSegment(BaseModel):
    """One stretch of speech."""

    id: int
    avg_logprob: float
    compression_ratio: float
    end: float
    no_speech_prob: float
    seek: int
    start: float
    temperature: float
    text: str
    tokens: list[int]


class TranscriptionVerbose(BaseModel):
    """A transcript with language, duration, segments and (when asked for) words."""

    duration: float
    language: str
    text: str
    segments: list[TranscriptionSegment] | None = None
    words: list[TranscriptionWord] | None = None


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


class Image(BaseModel):
    """One generated picture: `b64_json` (or a data `url` when asked for) plus MultAI's `png` and `seed`."""

    b64_json: str | None = None
    revised_prompt: str | None = None
    url: str | None = None
    # Left out of model_dump(): b64_json already carries the same bytes as text.
    png: bytes = Field(repr=False, exclude=True, description="The PNG file.")
    seed: int = Field(description="The seed that reproduces this picture.")


class ImagesResponse(BaseModel):
    """The pictures of one generation, in request order."""

    created: int
    data: list[Image]
    output_format: Literal["png"] = "png"
    size: str


class ImageProgress(BaseModel):
    """A finished denoising step of the whole batch, passed to `on_progress`."""

    step: int
    total_steps: int


class Model(BaseModel):
    """An installed model; the fields after `owned_by` are MultAI's."""

    id: str
    created: int
    object: Literal["model"] = "model"
    owned_by: str = "multai"
    aliases: list[str] = Field(default_factory=list)
    modality: str
    backend: str
    fixture: bool = False
    resident: Literal["cpu", "gpu"] | None = Field(None, description="Where it is loaded now, if anywhere.")


class ModelList(BaseModel):
    """The models of every configured service, in id order; iterating yields them."""

    data: list[Model]
    object: Literal["list"] = "list"

    def __iter__(self) -> Iterator[Model]:  # type: ignore[override]
        return iter(self.data)
