"""The interfaces of speech-to-text and text-to-speech engines, and the plain data they exchange."""

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

# Whisper's input: mono float32 at 16 kHz.
WHISPER_SAMPLE_RATE = 16_000
# The names OpenAI's speech endpoint accepts; every TTS model maps each of them to one of its own voices.
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)


class UnknownVoiceError(ValueError):
    """The voice is neither an OpenAI voice name nor one of the model's own voices."""

    def __init__(self, voice: str, valid: list[str]) -> None:
        super().__init__(f"Unknown voice '{voice}'. Valid voices: {', '.join(valid)}")
        self.valid = valid


@dataclass(frozen=True)
class TranscribeOptions:
    """How to transcribe; None takes the engine's default."""

    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    word_timestamps: bool = False


@dataclass(frozen=True)
class WordTiming:
    """One word and its time span in seconds."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class SegmentResult:
    """One segment, with the fields of OpenAI's verbose_json."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


@dataclass(frozen=True)
class TranscriptResult:
    """A whole transcript."""

    text: str
    language: str
    duration: float
    segments: list[SegmentResult] = field(default_factory=list)
    words: list[WordTiming] = field(default_factory=list)


class SpeechToTextBackend(Protocol):
    """A Whisper-class engine."""

    multilingual: bool

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        """Loads the weights; returns the bytes the model takes."""

    def unload(self) -> None:
        """Frees the model's memory."""

    def transcribe(self, audio: npt.NDArray[np.float32], options: TranscribeOptions) -> TranscriptResult:
        """Transcribes mono float32 audio at WHISPER_SAMPLE_RATE, of any length."""


@dataclass(frozen=True)
class PcmChunk:
    """Synthesised audio: mono int16 samples."""

    samples: npt.NDArray[np.int16]
    sample_rate: int


class TextToSpeechBackend(Protocol):
    """A speech synthesis engine."""

    def voices(self) -> list[str]:
        """The model's own voice names (or presets), in a stable order."""

    def resolve_voice(self, voice: str) -> str:
        """The model's voice for an OpenAI voice name or one of its own; UnknownVoiceError otherwise."""

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        """Loads the weights; returns the bytes the model takes."""

    def unload(self) -> None:
        """Frees the model's memory."""

    def synthesize(self, text: str, voice: str, speed: float, cancel: threading.Event) -> Iterator[PcmChunk]:
        """Yields audio as it is produced (e.g. a sentence at a time); stops once `cancel` is set."""
