"""Pydantic models of /v1/images/generations, fields in the order of OpenAI's reference."""

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from multai.openai_params import DEFAULT_IMAGE_MODEL, image_dimensions
from rest_bridge.protocol.common import Prioritized


class ImageGenerationRequest(Prioritized):
    """The request body; negative_prompt, num_inference_steps, guidance_scale and seed are MultAI's."""

    prompt: str = Field(min_length=1)
    background: Literal["transparent", "opaque", "auto"] | None = None
    model: str = Field(DEFAULT_IMAGE_MODEL, min_length=1)
    moderation: str | None = Field(None, description="Accepted and ignored: no moderation model runs.")
    n: int = Field(1, ge=1, description="How many images; the image service sets the upper limit.")
    output_format: Literal["png"] | None = Field(None, description="Only PNG is produced.")
    quality: str | None = Field(None, description="Accepted and ignored: steps set the quality.")
    response_format: Literal["url", "b64_json"] = "url"
    size: str | None = Field(
        None, description="WIDTHxHEIGHT in pixels, multiples of 8; 'auto' or absent uses the model's own."
    )
    stream: bool = False
    style: str | None = Field(None, description="Accepted and ignored.")
    user: str | None = None
    negative_prompt: str | None = None
    num_inference_steps: int | None = Field(None, ge=1, description="Denoising steps.")
    number_of_steps: int | None = Field(None, ge=1, description="The seed design's name for the steps.")
    guidance_scale: float | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0, description="Same seed and parameters give the same image bytes.")

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: str | None) -> str | None:
        if image_dimensions(value) is None:
            raise ValueError("size must be 'auto' or WIDTHxHEIGHT, e.g. '1024x1024'")
        return value

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> "ImageGenerationRequest":
        if self.stream:
            raise ValueError("streaming partial images is not supported; the gRPC API streams progress")
        if self.background == "transparent":
            raise ValueError("transparent backgrounds are not supported")
        return self

    def dimensions(self) -> tuple[int, int]:
        """(width, height); (0, 0) asks for the model's default size."""
        return image_dimensions(self.size) or (0, 0)

    def steps(self) -> int | None:
        """num_inference_steps, else the seed design's number_of_steps."""
        return self.num_inference_steps if self.num_inference_steps is not None else self.number_of_steps


class ImageData(BaseModel):
    """One image: a URL or base64 PNG."""

    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    """The response; `seed` (MultAI's) reproduces the first image, image i used seed + i."""

    created: int
    data: list[ImageData]
    output_format: Literal["png"] = "png"
    size: str
    seed: int
