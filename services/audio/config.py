"""Settings of the audio service process."""

from typing import ClassVar

from pydantic import Field

from multai.settings import ModelServiceSettings, default_engine_threads


class AudioSettings(ModelServiceSettings):
    """Settings of the audio service (env MULTAI_<NAME>, TOML section [audio], or the flags below)."""

    toml_section: ClassVar[str] = "audio"

    port: int = Field(50052, description="Port to bind.")
    cpu_threads: int = Field(
        default_factory=default_engine_threads,
        ge=1,
        description="CPU threads for Whisper (default: the physical cores this process may use).",
    )
    vad_filter: bool = Field(True, description="Skip silence in long audio with Silero VAD before Whisper.")
    max_speech_input_chars: int = Field(4096, ge=1, description="Longest text for /v1/audio/speech.")
