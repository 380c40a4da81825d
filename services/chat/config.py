"""Settings of the chat service process."""

import os
from typing import ClassVar

from pydantic import Field

from multai.settings import ModelServiceSettings


class ChatSettings(ModelServiceSettings):
    """Settings of the chat service (env MULTAI_<NAME>, TOML section [chat], or the flags below)."""

    toml_section: ClassVar[str] = "chat"

    port: int = Field(50051, description="Port to bind.")
    n_threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="CPU threads for generation."
    )
    context_length: int = Field(2048, ge=128, description="Context window when the manifest sets none.")
