"""Settings of the chat service process."""

from typing import ClassVar

from pydantic import Field

from multai.settings import ModelServiceSettings, default_engine_threads


class ChatSettings(ModelServiceSettings):
    """Settings of the chat service (env MULTAI_<NAME>, TOML section [chat], or the flags below)."""

    toml_section: ClassVar[str] = "chat"

    port: int = Field(50051, description="Port to bind.")
    n_threads: int = Field(
        default_factory=default_engine_threads,
        ge=1,
        description="CPU threads for generation (default: the physical cores this process may use).",
    )
    context_length: int = Field(
        2048, ge=128, description="Context window of one request when the manifest sets none."
    )
    parallel: int = Field(
        4,
        ge=1,
        le=64,
        description="Requests a GGUF model decodes together in one batch when its manifest sets no "
        "`parallel`; the KV cache holds parallel x context_length tokens.",
    )
