"""The keyword arguments of each call, declared once for the sync and the async client.

Names and meanings are the `openai` SDK's; `priority`, `timeout` and the llama.cpp extras are MultAI's.
"""

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any, Literal, Required, TypedDict

Priority = Literal[0, 1, 2, "urgent", "normal", "background"]
# What `file=` accepts: bytes, a path, an open binary file, or (filename, bytes or file).
FileInput = bytes | str | os.PathLike[str] | IO[bytes] | tuple[str, bytes | IO[bytes]]


class RequestOptions(TypedDict, total=False):
    """What every inference call takes."""

    priority: Priority | None
    timeout: float | None


class SamplingOptions(RequestOptions, total=False):
    """Sampling shared by chat and completions."""

    frequency_penalty: float | None
    logit_bias: Mapping[str, float] | None
    max_tokens: int | None
    presence_penalty: float | None
    seed: int | None
    stop: str | Sequence[str] | None
    stream_options: Mapping[str, bool] | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    repeat_penalty: float | None
    n_threads: int | None
    n_gpu_layers: int | None


class ChatCompletionParams(SamplingOptions, total=False):
    """`chat.completions.create(...)` apart from `stream`."""

    model: Required[str]
    messages: Required[Iterable[Mapping[str, Any] | Any]]
    logprobs: bool | None
    max_completion_tokens: int | None
    n: int | None
    parallel_tool_calls: bool | None
    response_format: Mapping[str, Any] | None
    tool_choice: str | Mapping[str, Any] | None
    tools: Iterable[Mapping[str, Any]] | None
    top_logprobs: int | None
    user: str | None


class CompletionParams(SamplingOptions, total=False):
    """`completions.create(...)` apart from `stream`."""

    model: Required[str]
    prompt: Required[str | Sequence[str]]
    n: int | None
    user: str | None


class EmbeddingParams(RequestOptions, total=False):
    """`embeddings.create(...)`."""

    model: Required[str]
    input: Required[str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]]]
    dimensions: int | None
    encoding_format: Literal["float", "base64"] | None
    user: str | None


TranscriptFormat = Literal["json", "text", "verbose_json"]


class TranslationParams(RequestOptions, total=False):
    """`audio.translations.create(...)`."""

    model: Required[str]
    file: Required[FileInput]
    prompt: str | None
    response_format: TranscriptFormat | None
    temperature: float | None


class TranscriptionParams(TranslationParams, total=False):
    """`audio.transcriptions.create(...)`."""

    language: str | None
    timestamp_granularities: Sequence[Literal["word", "segment"]] | None


class SpeechParams(RequestOptions, total=False):
    """`audio.speech.create(...)`."""

    model: Required[str]
    input: Required[str]
    voice: Required[str]
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None
    speed: float | None


class ImageGenerateParams(RequestOptions, total=False):
    """`images.generate(...)` apart from `on_progress`; quality, style and user are accepted and ignored."""

    prompt: Required[str]
    model: str | None
    n: int | None
    size: str | None
    response_format: Literal["b64_json", "url"] | None
    seed: int | None
    negative_prompt: str | None
    num_inference_steps: int | None
    guidance_scale: float | None
    quality: str | None
    style: str | None
    user: str | None
