"""Pydantic models of /v1/images/generations, fields in the order of OpenAI's reference."""

import base64
import time
from collections.abc import Sequence
from typing import Literal, get_args

from pydantic import BaseModel, Field, field_validator, model_validator

from multai.common.v1 import common_pb2
from multai.image.v1 import image_pb2
from multai.openai.common import Prioritized, omitted_if_none
from multai.openai_params import (
    DEFAULT_IMAGE_MODEL,
    INT32_MAX,
    INT64_MAX,
    MAX_GUIDANCE_SCALE,
    image_dimensions,
)

# OpenAI returns base64 only for this model, and code written for it reads data[0].b64_json.
BASE64_IMAGE_MODEL = "gpt-image-1"
# The sizes ImagesResponse.size may hold in OpenAI's schema (gpt-image-1's).
ResponseSize = Literal["1024x1024", "1024x1536", "1536x1024"]
RESPONSE_SIZES: frozenset[str] = frozenset(get_args(ResponseSize))


class ImageGenerationRequest(Prioritized):
    """The request body; negative_prompt, num_inference_steps, guidance_scale and seed are MultAI's."""

    prompt: str = Field(min_length=1)
    background: Literal["transparent", "opaque", "auto"] | None = None
    model: str = Field(DEFAULT_IMAGE_MODEL, min_length=1)
    moderation: str | None = Field(None, description="Accepted and ignored: no moderation model runs.")
    n: int = Field(1, ge=1, le=INT32_MAX, description="How many images; the image service sets the limit.")
    output_format: Literal["png"] | None = Field(None, description="Only PNG is produced.")
    quality: str | None = Field(None, description="Accepted and ignored: steps set the quality.")
    response_format: Literal["url", "b64_json"] | None = Field(
        None,
        description="url, or b64_json; the default is b64_json for gpt-image-1 (as OpenAI's) and url else.",
    )
    size: str | None = Field(
        None, description="WIDTHxHEIGHT in pixels, multiples of 8; 'auto' or absent uses the model's own."
    )
    stream: bool = False
    style: str | None = Field(None, description="Accepted and ignored.")
    user: str | None = None
    negative_prompt: str | None = None
    num_inference_steps: int | None = Field(None, ge=1, le=INT32_MAX, description="Denoising steps.")
    number_of_steps: int | None = Field(
        None, ge=1, le=INT32_MAX, description="The seed design's name for the steps."
    )
    guidance_scale: float | None = Field(None, ge=0, le=MAX_GUIDANCE_SCALE)
    seed: int | None = Field(
        None, ge=0, le=INT64_MAX, description="Same seed and parameters give the same image bytes."
    )

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

    def wants_base64(self) -> bool:
        """Whether the images come back as base64 PNG rather than URLs."""
        if self.response_format is None:
            return self.model == BASE64_IMAGE_MODEL
        return self.response_format == "b64_json"

    def steps(self) -> int | None:
        """num_inference_steps, else the seed design's number_of_steps."""
        return self.num_inference_steps if self.num_inference_steps is not None else self.number_of_steps

    def to_pb(
        self, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> image_pb2.GenerateImagesRequest:
        """The ImageService request."""
        width, height = self.dimensions()
        return image_pb2.GenerateImagesRequest(
            model=self.model,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt or "",
            n=self.n,
            width=width,
            height=height,
            num_inference_steps=self.steps(),
            guidance_scale=self.guidance_scale,
            seed=self.seed,
            priority=priority,
            request_id=request_id,
        )


class ImageData(BaseModel):
    """One image: a URL or base64 PNG, and the prompt it was made from (no prompt is rewritten here)."""

    url: str | None = omitted_if_none()
    b64_json: str | None = omitted_if_none()
    revised_prompt: str


class ImagesResponse(BaseModel):
    """The response; `seed` (MultAI's) reproduces the first image, image i used seed + i."""

    created: int
    data: list[ImageData]
    output_format: Literal["png"] = "png"
    size: ResponseSize | None = omitted_if_none("Only the sizes OpenAI's schema names; others are left out.")
    seed: int

    @classmethod
    def from_pb(
        cls,
        images: Sequence[image_pb2.GeneratedImage],
        request: ImageGenerationRequest,
        urls: Sequence[str] | None = None,
    ) -> "ImagesResponse":
        """The response to request: base64 PNGs, or when the request asked for URLs, urls (one per image)."""
        images = sorted(images, key=lambda image: image.index)
        if request.wants_base64():
            data = [
                ImageData(b64_json=base64.b64encode(image.png).decode(), revised_prompt=request.prompt)
                for image in images
            ]
        else:
            if urls is None or len(urls) != len(images):
                raise ValueError("a URL is needed for each image")
            data = [ImageData(url=url, revised_prompt=request.prompt) for url in urls]
        size = f"{images[0].width}x{images[0].height}"
        return cls(
            created=int(time.time()),
            data=data,
            size=size if size in RESPONSE_SIZES else None,
            seed=images[0].seed,
        )
