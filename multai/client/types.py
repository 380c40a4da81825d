"""Response objects with the `openai` SDK's class and attribute names, so reading code ports unchanged."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class CompletionUsage(BaseModel):
    """Token counts of one chat or completion request."""

    completion_tokens: int
    prompt_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    """One likely token at a position."""

    token: str
    bytes: list[int] | None = None
    logprob: float


class ChatCompletionTokenLogprob(BaseModel):
    """A sampled token with its log probability and the likeliest alternatives."""

    token: str
    bytes: list[int] | None = None
    logprob: float
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    """The log probabilities of a choice's tokens."""

    content: list[ChatCompletionTokenLogprob] | None = None


class Function(BaseModel):
    """The function an assistant called, with its arguments as JSON text."""

    arguments: str
    name: str


class ChatCompletionMessageToolCall(BaseModel):
    """One tool call of an assistant message."""

    id: str
    function: Function
    type: Literal["function"] = "function"


class ChatCompletionMessage(BaseModel):
    """The assistant's reply; `content` is None when it only called tools."""

    content: str | None = None
    role: Literal["assistant"] = "assistant"
    tool_calls: list[ChatCompletionMessageToolCall] | None = None


class Choice(BaseModel):
    """One choice of a whole chat completion."""

    finish_reason: str
    index: int
    logprobs: ChoiceLogprobs | None = None
    message: ChatCompletionMessage


class ChatCompletion(BaseModel):
    """A whole (non-streamed) chat completion."""

    id: str
    choices: list[Choice]
    created: int
    model: str
    object: Literal["chat.completion"] = "chat.completion"
    usage: CompletionUsage | None = None


class ChoiceDeltaToolCallFunction(BaseModel):
    """A piece of a streamed tool call's function."""

    arguments: str | None = None
    name: str | None = None


class ChoiceDeltaToolCall(BaseModel):
    """A piece of a streamed tool call; pieces with the same index belong to one call."""

    index: int
    id: str | None = None
    function: ChoiceDeltaToolCallFunction | None = None
    type: Literal["function"] | None = None


class ChoiceDelta(BaseModel):
    """What one chunk adds to a choice."""

    content: str | None = None
    role: Literal["assistant"] | None = None
    tool_calls: list[ChoiceDeltaToolCall] | None = None


class ChunkChoice(BaseModel):
    """One choice of a streamed chunk."""

    delta: ChoiceDelta
    finish_reason: str | None = None
    index: int
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    """One piece of a streamed chat completion; the usage chunk (if asked for) has no choices."""

    id: str
    choices: list[ChunkChoice]
    created: int
    model: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    usage: CompletionUsage | None = None


class CompletionChoice(BaseModel):
    """One choice of a (legacy) completion."""

    finish_reason: str | None = None
    index: int = 0
    logprobs: None = None
    text: str


class Completion(BaseModel):
    """A (legacy) completion; streamed chunks have the same shape."""

    id: str
    choices: list[CompletionChoice]
    created: int
    model: str
    object: Literal["text_completion"] = "text_completion"
    usage: CompletionUsage | None = None


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
