"""Settings of the image service process."""

from typing import ClassVar

from pydantic import Field

from multai.settings import ModelServiceSettings


class ImageSettings(ModelServiceSettings):
    """Settings of the image service (env MULTAI_<NAME>, TOML section [image], or the flags below)."""

    toml_section: ClassVar[str] = "image"

    port: int = Field(50053, description="Port to bind.")
    max_images: int = Field(10, ge=1, description="Most images one request may ask for (OpenAI's n).")
    max_image_side: int = Field(2048, ge=64, description="Largest width or height in pixels.")
    max_inference_steps: int = Field(100, ge=1, description="Most denoising steps one request may ask for.")
    max_prompt_chars: int = Field(4000, ge=1, description="Longest prompt or negative prompt.")
    max_megapixel_steps: float = Field(
        64.0,
        gt=0,
        description="Most work one request may ask for: width x height x steps x n, in megapixel-steps "
        "(64 is one 1024x1024 picture at 61 steps); larger requests are refused before they queue.",
    )
