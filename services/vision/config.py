"""Settings of the vision service process."""

from typing import ClassVar

from pydantic import Field

from multai.settings import ModelServiceSettings


class VisionSettings(ModelServiceSettings):
    """Settings of the vision service (env MULTAI_<NAME>, TOML section [vision], or the flags below)."""

    toml_section: ClassVar[str] = "vision"

    port: int = Field(50054, description="Port to bind.")
    max_images_per_request: int = Field(8, ge=1, description="Most images one conversation may carry.")
