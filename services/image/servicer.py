"""ImageService: the only place this service touches protobuf."""

import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing

import grpc

from multai.errors import InvalidRequestError
from multai.image.v1 import image_pb2, image_pb2_grpc
from multai.model_host import ModelHost
from multai.openai_params import MAX_GUIDANCE_SCALE
from multai.registry import ModelManifest
from services.image.backends.base import FinishedImage, ImageRequest, StepDone, TextToImageBackend
from services.image.config import ImageSettings

TEXT_TO_IMAGE_BACKENDS = {"diffusers"}
# Latents are an eighth of the image on each side in SDXL and SD-1.5, so sides must divide by 8.
SIDE_MULTIPLE = 8
MIN_SIDE = 64
# SD-1.5's native size; SDXL-class manifests name their own.
DEFAULT_SIDE = 512
# Seeds stay within a signed 32-bit range so that every client and engine round-trips them.
SEED_LIMIT = 2**31
# What a diffusers pipeline runs when neither the request nor the manifest names the steps.
DIFFUSERS_DEFAULT_STEPS = 50


class ImageServicer(image_pb2_grpc.ImageServiceServicer):
    """Generates images under a scheduler lease, streaming each denoising step."""

    def __init__(self, host: ModelHost[TextToImageBackend], settings: ImageSettings) -> None:
        self._host = host
        self._settings = settings

    def _image_request(
        self, request: image_pb2.GenerateImagesRequest, manifest: ModelManifest
    ) -> ImageRequest:
        """The request checked against the service's limits; an unset size is the model's default."""
        limits = self._settings
        width, height = request.width, request.height
        if not (width or height):
            width = manifest.int_default("width", DEFAULT_SIDE)
            height = manifest.int_default("height", DEFAULT_SIDE)
        if not request.prompt.strip():
            raise InvalidRequestError("prompt must not be empty", param="prompt")
        for name, text in (("prompt", request.prompt), ("negative_prompt", request.negative_prompt)):
            if len(text) > limits.max_prompt_chars:
                raise InvalidRequestError(
                    f"{name} is longer than {limits.max_prompt_chars} characters", param=name
                )
        n = request.n or 1
        if not 1 <= n <= limits.max_images:
            raise InvalidRequestError(f"n must be between 1 and {limits.max_images}", param="n")
        for side in (width, height):
            if not MIN_SIDE <= side <= limits.max_image_side or side % SIDE_MULTIPLE:
                raise InvalidRequestError(
                    f"size {width}x{height} is not supported: width and height must be "
                    f"multiples of {SIDE_MULTIPLE} between {MIN_SIDE} and {limits.max_image_side}",
                    param="size",
                )
        steps = request.num_inference_steps if request.HasField("num_inference_steps") else None
        if steps is not None and not 1 <= steps <= limits.max_inference_steps:
            raise InvalidRequestError(
                f"num_inference_steps must be between 1 and {limits.max_inference_steps}",
                param="num_inference_steps",
            )
        guidance = request.guidance_scale if request.HasField("guidance_scale") else None
        if guidance is not None and not 0 <= guidance <= MAX_GUIDANCE_SCALE:
            raise InvalidRequestError(
                f"guidance_scale must be between 0 and {MAX_GUIDANCE_SCALE:g}", param="guidance_scale"
            )
        # The steps the pipeline will run: the request's, the manifest's default, else diffusers' own.
        planned_steps = steps or manifest.int_default("num_inference_steps", DIFFUSERS_DEFAULT_STEPS)
        work = width * height * planned_steps * n / 1e6
        if work > limits.max_megapixel_steps:
            raise InvalidRequestError(
                f"{n} images of {width}x{height} at {planned_steps} steps is {work:.0f} megapixel-steps of "
                f"work; this service takes at most {limits.max_megapixel_steps:g}: ask for fewer or smaller "
                "images or fewer steps",
                param="n" if n > 1 else "size",
            )
        seed = request.seed if request.HasField("seed") else secrets.randbelow(SEED_LIMIT - n)
        if not 0 <= seed < SEED_LIMIT - n:
            raise InvalidRequestError(f"seed must be between 0 and {SEED_LIMIT - n - 1}", param="seed")
        return ImageRequest(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            n=n,
            width=width,
            height=height,
            num_inference_steps=steps,
            guidance_scale=guidance,
            seed=seed,
        )

    async def GenerateImages(
        self, request: image_pb2.GenerateImagesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[image_pb2.GenerateImagesResponse]:
        manifest = self._host.registry.resolve_for(request.model, TEXT_TO_IMAGE_BACKENDS, "image generation")
        image_request = self._image_request(request, manifest)

        async with self._host.leased(manifest, request.priority, request.request_id) as backend:

            def generate(cancel: threading.Event) -> Iterator[StepDone | FinishedImage]:
                return backend.generate(image_request, cancel)

            async with aclosing(self._host.stream(generate)) as events:
                async for event in events:
                    if isinstance(event, StepDone):
                        yield image_pb2.GenerateImagesResponse(
                            model=manifest.id,
                            progress=image_pb2.StepProgress(step=event.step, total_steps=event.total_steps),
                        )
                    else:
                        self._host.metrics.images.labels(manifest.id).inc()
                        yield image_pb2.GenerateImagesResponse(
                            model=manifest.id,
                            image=image_pb2.GeneratedImage(
                                index=event.index,
                                png=event.png,
                                seed=event.seed,
                                width=image_request.width,
                                height=image_request.height,
                            ),
                        )
