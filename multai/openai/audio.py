"""Pydantic models of /v1/audio/*: the speech request and the transcription responses."""

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, Field

from multai.audio.v1 import audio_pb2
from multai.openai.common import Prioritized
from multai.openai_objects import verbose_transcript_fields

TranscriptionFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
TimestampGranularity = Literal["word", "segment"]
SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
# The MIME type of each speech format, as the audio service sends it.
SPEECH_CONTENT_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# OpenAI's limit on uploads.
MAX_UPLOAD_BYTES = 25 * 1024 * 1024


class SpeechRequest(Prioritized):
    """The body of /v1/audio/speech."""

    model: str = Field(min_length=1)
    # The audio service checks the text's length and the speed, so that gRPC callers meet the same limits.
    input: str = Field(description="The text to speak.")
    voice: str = Field(min_length=1, description="An OpenAI voice name, or the model's own voice or preset.")
    response_format: SpeechFormat = "mp3"
    speed: float = Field(1.0, description="0.25 to 4.0.")


class TranscriptionWord(BaseModel):
    """One word with its time span."""

    word: str
    start: float
    end: float


class TranscriptionSegment(BaseModel):
    """One segment of verbose_json."""

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


class Transcription(BaseModel):
    """response_format=json."""

    text: str


class TranscriptionVerbose(BaseModel):
    """response_format=verbose_json."""

    task: Literal["transcribe", "translate"]
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegment] | None = None
    words: list[TranscriptionWord] | None = None

    @classmethod
    def from_pb(
        cls, transcript: audio_pb2.Transcript, task: str, granularities: Iterable[str]
    ) -> "TranscriptionVerbose":
        """verbose_json: segments unless only words were asked for; words only when asked for."""
        return cls(
            task="translate" if task == "translate" else "transcribe",
            **verbose_transcript_fields(transcript, granularities),
        )
