"""LLaVA through transformers, from a local folder in llava-hf/llava-1.5-7b-hf's layout.

transformers' generate() runs in a worker thread and hands each new token to a queue, which the caller's
generator reads: it decodes the text, cuts it at stop sequences and counts tokens, and a stopping criterion
ends generate() as soon as the reply is complete or the request is cancelled.
"""

import io
import queue
import random
import threading
from collections.abc import Iterator
from typing import Any, Literal

import torch
from PIL import Image
from transformers import (
    AutoProcessor,
    LlavaForConditionalGeneration,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from multai.errors import InvalidRequestError
from multai.registry import ModelManifest
from multai.streamed_text import ReplyText, WindowDetokenizer
from multai.torch_runtime import leased_device, release_device_memory, seeded_generation, weights_dtype
from services.vision.backends.base import VisionDone, VisionSampling, VisionTurn

DEFAULT_MAX_TOKENS = 256
# OpenAI's defaults: temperature 1 samples; temperature 0 is greedy.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")


class _TokenQueue(BaseStreamer):
    """Receives generate()'s tokens in its thread; the reader gets ints, then None at the end."""

    def __init__(self) -> None:
        self.tokens: queue.SimpleQueue[int | BaseException | None] = queue.SimpleQueue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        # generate() first hands over the prompt, then one token per step.
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.tokens.put(int(token))

    def end(self) -> None:
        self.tokens.put(None)


class _StopWhenSet(StoppingCriteria):
    """Ends generate() at the next step once the event is set."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full(
            (input_ids.shape[0],), self._event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def decode_image(data: bytes, index: int) -> Image.Image:
    """An encoded PNG, JPEG, WebP or GIF (its first frame) as RGB pixels; a client error otherwise."""
    try:
        # Only OpenAI's formats: Pillow's other decoders are more surface than the service needs.
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            return image.convert("RGB")
    # OSError covers unknown formats and truncated files; SyntaxError, some damaged ones.
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidRequestError(
            f"image {index + 1} of the conversation cannot be decoded as PNG, JPEG, WebP or GIF: {exc}",
            param="messages",
        ) from exc


def conversation_for_template(turns: list[VisionTurn]) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    """The turns as chat-template messages with {"type": "image"} placeholders, and the images in order."""
    images: list[Image.Image] = []
    messages = []
    for turn in turns:
        content: list[dict[str, str]] = []
        for part in turn.parts:
            if isinstance(part, bytes):
                images.append(decode_image(part, len(images)))
                content.append({"type": "image"})
            else:
                content.append({"type": "text", "text": part})
        messages.append({"role": turn.role, "content": content})
    return messages, images


class LlavaBackend:
    """A LLaVA model and its processor; load() and generate() block, so the caller runs them off the loop."""

    def __init__(self, manifest: ModelManifest) -> None:
        self.manifest = manifest
        self._model: LlavaForConditionalGeneration | None = None
        self._processor: Any = None
        self._device = torch.device("cpu")
        default_max_tokens = manifest.defaults.get("max_tokens", DEFAULT_MAX_TOKENS)
        if isinstance(default_max_tokens, bool) or not isinstance(default_max_tokens, int):
            raise ValueError(f"model {manifest.id}: defaults.max_tokens must be a whole number")
        self._default_max_tokens = default_max_tokens

    def load(self, use_gpu: bool, gpu_layers: int) -> int:
        """Loads the model and its processor; LLaVA is not split by layers, so gpu_layers is ignored."""
        self._device = leased_device(use_gpu)
        # Local paths and local_files_only: loading never reaches for the Hub.
        model = LlavaForConditionalGeneration.from_pretrained(
            self.manifest.folder, local_files_only=True, dtype=weights_dtype(self._device)
        )
        self._model = model.to(self._device).eval()  # type: ignore[arg-type]  # transformers mistypes to()
        self._processor = AutoProcessor.from_pretrained(str(self.manifest.folder), local_files_only=True)
        return sum(p.numel() * p.element_size() for p in self._model.parameters())

    def unload(self) -> None:
        """Drops the model; the GPU cache is emptied so the memory is visible as free."""
        self._model = None
        self._processor = None
        release_device_memory(self._device)

    def generate(
        self, turns: list[VisionTurn], sampling: VisionSampling, cancel: threading.Event
    ) -> Iterator[str | VisionDone]:
        """Streams the assistant's reply as text pieces, then a VisionDone; stops once `cancel` is set."""
        if self._model is None or self._processor is None:
            raise RuntimeError(f"model {self.manifest.id} is not loaded")
        model, processor = self._model, self._processor
        messages, images = conversation_for_template(turns)
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(images=images or None, text=prompt, return_tensors="pt")
        prompt_tokens = int(inputs["input_ids"].shape[1])
        max_new_tokens = self._max_new_tokens(sampling, prompt_tokens)

        tokens = _TokenQueue()
        finished = threading.Event()
        generation_kwargs = {
            **{key: value.to(self._device) for key, value in inputs.items()},
            **_sampling_kwargs(sampling),
            "max_new_tokens": max_new_tokens,
            "streamer": tokens,
            "stopping_criteria": StoppingCriteriaList([_StopWhenSet(cancel), _StopWhenSet(finished)]),
        }
        if "pixel_values" in generation_kwargs:
            generation_kwargs["pixel_values"] = generation_kwargs["pixel_values"].to(model.dtype)
        worker = threading.Thread(
            target=self._run_generate,
            args=(model, generation_kwargs, sampling.seed, tokens),
            name=f"generate-{self.manifest.id}",
            daemon=True,
        )
        worker.start()

        eos_ids = _eos_token_ids(model)
        tokenizer = processor.tokenizer
        text = ReplyText(
            WindowDetokenizer(lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True))), sampling.stop
        )
        finish_reason: Literal["stop", "length"] = "length"
        completion_tokens = 0
        stopped = False
        try:
            while (token := tokens.tokens.get()) is not None:
                if isinstance(token, BaseException):
                    raise token
                if cancel.is_set() or token in eos_ids:
                    finish_reason = "stop"
                    break
                completion_tokens += 1
                piece, stopped = text.push(token)
                if piece:
                    yield piece
                if stopped:
                    finish_reason = "stop"
                    break
            # After a stop sequence nothing more belongs to the reply.
            if not stopped and (rest := text.finish()):
                yield rest
            yield VisionDone(finish_reason, prompt_tokens, completion_tokens)
        finally:
            # Whether the reply is complete or its reader went away, the device is idle once this returns.
            finished.set()
            worker.join()

    def _max_new_tokens(self, sampling: VisionSampling, prompt_tokens: int) -> int:
        """The request's max_tokens (or the model's default), within what the context has room for."""
        assert self._model is not None
        requested = sampling.max_tokens if sampling.max_tokens is not None else self._default_max_tokens
        if requested < 1:
            raise InvalidRequestError("max_tokens must be at least 1", param="max_tokens")
        context_length = int(self._model.config.get_text_config().max_position_embeddings)
        room = context_length - prompt_tokens
        if room < 1:
            raise InvalidRequestError(
                f"the prompt is {prompt_tokens} tokens long (each image counts), and '{self.manifest.id}' "
                f"holds {context_length} tokens in all; send fewer images or shorter text",
                param="messages",
            )
        return min(requested, room)

    def _run_generate(
        self,
        model: LlavaForConditionalGeneration,
        generation_kwargs: dict[str, Any],
        seed: int | None,
        tokens: _TokenQueue,
    ) -> None:
        """generate() in the worker thread; an exception is handed to the reader instead of being lost."""
        try:
            # Every generation draws from its own seeded sequence, so the same seed gives the same reply.
            with (
                seeded_generation(seed if seed is not None else random.randrange(2**63), self._device),
                torch.inference_mode(),
            ):
                model.generate(**generation_kwargs)
        except BaseException as exc:
            tokens.tokens.put(exc)


def _sampling_kwargs(sampling: VisionSampling) -> dict[str, Any]:
    """generate()'s sampling arguments: greedy at temperature 0, sampled otherwise."""
    # The repetition penalty also applies to greedy decoding, as llama.cpp's does.
    penalty = {} if sampling.repeat_penalty is None else {"repetition_penalty": sampling.repeat_penalty}
    temperature = sampling.temperature if sampling.temperature is not None else DEFAULT_TEMPERATURE
    if temperature <= 0:
        return {"do_sample": False, **penalty}
    # Unset, top_k is the model's generation config's; 0 disables it in transformers as in llama.cpp.
    top_k = {} if sampling.top_k is None else {"top_k": sampling.top_k}
    return {
        "do_sample": True,
        "temperature": temperature,
        "top_p": sampling.top_p if sampling.top_p is not None else DEFAULT_TOP_P,
        **top_k,
        **penalty,
    }


def _eos_token_ids(model: LlavaForConditionalGeneration) -> set[int]:
    """The token ids that end a reply, as the model's generation config lists them."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {int(token) for token in (eos if isinstance(eos, list) else [eos])}
