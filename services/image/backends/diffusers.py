"""Text-to-image through diffusers, from a local pipeline folder in sdxl-turbo's or SD-1.5's layout."""

import io
import itertools
import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoPipelineForText2Image, DiffusionPipeline
from PIL import Image

from multai.registry import ModelManifest
from multai.torch_runtime import leased_device, release_device_memory, weights_dtype
from services.image.backends.base import FinishedImage, ImageRequest, StepDone


def encode_png(image: Image.Image) -> bytes:
    """The image as PNG; Pillow writes no timestamp, so equal pixels give equal bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class _Cancelled(Exception):
    """Raised from the step callback to leave the pipeline at once, skipping the remaining steps and the
    VAE decode (diffusers' own `_interrupt` flag skips the steps but still decodes)."""


@dataclass(frozen=True)
class _Denoised:
    """How one pipeline call ended: its image, None when cancelled, or the error it raised."""

    image: Image.Image | None = None
    error: BaseException | None = None


class DiffusersBackend:
    """Any diffusers text-to-image pipeline (SDXL, SD-1.5, ...), one pipeline call per image."""

    def __init__(self, manifest: ModelManifest) -> None:
        self.manifest = manifest
        self._pipeline: DiffusionPipeline | None = None
        self._device = torch.device("cpu")

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        """Loads the pipeline named by the folder's model_index.json; gpu_layers is ignored, since a pipeline
        is not split by layers."""
        self._device = leased_device(use_gpu)
        # A local folder and local_files_only: loading never reaches for the Hub. In half precision SDXL
        # upcasts its VAE where fp16 would overflow.
        pipeline = AutoPipelineForText2Image.from_pretrained(
            str(self.manifest.folder), local_files_only=True, dtype=weights_dtype(self._device)
        )
        # The service reports progress itself; tqdm bars would only clutter its log.
        pipeline.set_progress_bar_config(disable=True)
        self._pipeline = pipeline.to(self._device)
        modules = [c for c in pipeline.components.values() if isinstance(c, torch.nn.Module)]
        return sum(
            tensor.numel() * tensor.element_size()
            for module in modules
            for tensor in itertools.chain(module.parameters(), module.buffers())
        )

    def unload(self) -> None:
        """Drops the pipeline; the GPU cache is emptied so the memory is visible as free."""
        self._pipeline = None
        release_device_memory(self._device)

    def generate(self, request: ImageRequest, cancel: threading.Event) -> Iterator[StepDone | FinishedImage]:
        """Yields each denoising step and then the PNG of each image in turn; once `cancel` is set it yields
        nothing more and stops within a step.

        Image i is made with its own generator seeded `request.seed + i`, so any one image can be made
        again alone, with n=1 and that seed.
        """
        if self._pipeline is None:
            raise RuntimeError("DiffusersBackend.generate called before load()")
        options = self._pipeline_options(request)
        for index in range(request.n):
            if cancel.is_set():
                return
            seed = request.seed + index
            image = yield from self._denoise(self._pipeline, options, seed, cancel)
            if image is None or cancel.is_set():
                return
            yield FinishedImage(index=index, png=encode_png(image), seed=seed)

    def _pipeline_options(self, request: ImageRequest) -> dict[str, Any]:
        """The pipeline call's arguments; steps and guidance left unset fall back to the manifest's defaults,
        then to the pipeline's own."""
        options: dict[str, Any] = {
            "prompt": request.prompt,
            # None rather than "": SDXL then conditions on zeros, as sdxl-turbo's folder asks for.
            "negative_prompt": request.negative_prompt or None,
            "width": request.width,
            "height": request.height,
            "num_images_per_prompt": 1,
            "output_type": "pil",
        }
        steps: int | float | None = request.num_inference_steps
        if steps is None:
            steps = self.manifest.numeric_default("num_inference_steps")
        if steps is not None:
            options["num_inference_steps"] = int(steps)
        guidance = request.guidance_scale
        if guidance is None:
            guidance = self.manifest.numeric_default("guidance_scale")
        if guidance is not None:
            options["guidance_scale"] = float(guidance)
        return options

    def _denoise(
        self, pipeline: Any, options: dict[str, Any], seed: int, cancel: threading.Event
    ) -> Generator[StepDone, None, Image.Image | None]:
        """Runs one pipeline call, yielding its steps as they end; returns its image, or None if cancelled.

        diffusers reports steps through a callback inside the call, so the call runs in its own thread and
        the callback hands each step over here.
        """
        events: queue.SimpleQueue[StepDone | _Denoised] = queue.SimpleQueue()
        # Set when this generator is closed early, so that the call stops even if `cancel` never is.
        abandoned = threading.Event()

        # diffusers' base class types neither num_timesteps nor __call__; each pipeline class adds them.
        def on_step_end(pipe: Any, step_index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            events.put(StepDone(step=step_index + 1, total_steps=pipe.num_timesteps))
            if cancel.is_set() or abandoned.is_set():
                raise _Cancelled
            return tensors

        def run() -> None:
            try:
                generator = torch.Generator(device=self._device).manual_seed(seed)
                output = pipeline(**options, generator=generator, callback_on_step_end=on_step_end)
                events.put(_Denoised(image=output.images[0]))
            except _Cancelled:
                events.put(_Denoised())
            except BaseException as exc:
                events.put(_Denoised(error=exc))

        worker = threading.Thread(target=run, name=f"diffusers-{self.manifest.id}", daemon=True)
        worker.start()
        try:
            while True:
                event = events.get()
                if isinstance(event, StepDone):
                    # A step may end after the cancel; nothing is reported once the caller has cancelled.
                    if not cancel.is_set():
                        yield event
                    continue
                if event.error is not None:
                    raise event.error
                return event.image
        finally:
            # The device must be idle when the caller releases its lease.
            abandoned.set()
            worker.join()
