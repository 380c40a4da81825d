"""VisionService: the only place this service touches protobuf."""

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from importlib.metadata import version

import grpc

from multai.chat.v1 import chat_pb2
from multai.common.v1 import common_pb2
from multai.errors import InvalidRequestError
from multai.model_host import ModelHost
from multai.openai_params import SAMPLING_BOUNDS, check_bounds, checked_stops
from multai.vision.v1 import vision_pb2, vision_pb2_grpc
from services.vision.backends.base import VisionBackend, VisionDone, VisionSampling, VisionTurn

VISION_BACKENDS = {"llava"}
# The engine build in system_fingerprint.
VISION_ENGINE = f"transformers {version('transformers')} torch {version('torch')}"
ROLES = {"system", "user", "assistant"}
FINISH_TO_PB = {"stop": chat_pb2.FINISH_REASON_STOP, "length": chat_pb2.FINISH_REASON_LENGTH}


def turns_from_pb(messages: list[vision_pb2.VisionMessage], max_images: int) -> list[VisionTurn]:
    """The conversation as the backend takes it, checked for roles and the image count."""
    if not messages:
        raise InvalidRequestError("messages must hold at least one message", param="messages")
    turns = []
    for index, message in enumerate(messages):
        # OpenAI's "developer" role is the newer name of "system".
        role = "system" if message.role == "developer" else message.role
        if role not in ROLES:
            raise InvalidRequestError(
                f"messages[{index}].role must be one of {sorted(ROLES)}", param=f"messages[{index}].role"
            )
        parts: list[str | bytes] = [
            part.image if part.WhichOneof("part") == "image" else part.text for part in message.parts
        ]
        turns.append(VisionTurn(role, parts))
    images = sum(isinstance(part, bytes) for turn in turns for part in turn.parts)
    if images > max_images:
        raise InvalidRequestError(
            f"the conversation carries {images} images; this service takes at most {max_images}",
            param="messages",
        )
    return turns


def sampling_from_pb(sampling: chat_pb2.SamplingParams) -> VisionSampling:
    """The sampling fields LLaVA generation uses; those it has no counterpart for are refused, not dropped."""
    # transformers' generate() has no presence or frequency penalty, and logit_bias would need token ids
    # of LLaVA's own vocabulary; 0 (the OpenAI default that some clients always send) changes nothing.
    unsupported = {
        "logit_bias": bool(sampling.logit_bias),
        "presence_penalty": sampling.presence_penalty != 0,
        "frequency_penalty": sampling.frequency_penalty != 0,
    }
    for name, used in unsupported.items():
        if used:
            raise InvalidRequestError(f"'{name}' is not supported by vision models", param=name)
    check_bounds(sampling, SAMPLING_BOUNDS)
    return VisionSampling(
        max_tokens=sampling.max_tokens if sampling.HasField("max_tokens") else None,
        temperature=sampling.temperature if sampling.HasField("temperature") else None,
        top_p=sampling.top_p if sampling.HasField("top_p") else None,
        top_k=sampling.top_k if sampling.HasField("top_k") else None,
        repeat_penalty=sampling.repeat_penalty if sampling.HasField("repeat_penalty") else None,
        seed=sampling.seed if sampling.HasField("seed") else None,
        stop=checked_stops(sampling.stop),
    )


class VisionServicer(vision_pb2_grpc.VisionServiceServicer):
    """Streams replies about images, each under a scheduler lease."""

    def __init__(self, host: ModelHost[VisionBackend], max_images_per_request: int) -> None:
        self._host = host
        self._max_images = max_images_per_request

    async def CreateVisionCompletion(
        self, request: vision_pb2.CreateVisionCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[vision_pb2.CreateVisionCompletionResponse]:
        manifest = self._host.registry.resolve_for(request.model, VISION_BACKENDS, "vision")
        clock = self._host.metrics.stream_clock(manifest.id)
        turns = turns_from_pb(list(request.messages), self._max_images)
        sampling = sampling_from_pb(request.sampling)

        async with self._host.leased(manifest, request.priority, request.request_id) as backend:

            def generate(cancel: threading.Event) -> Iterator[str | VisionDone]:
                return backend.generate(turns, sampling, cancel)

            fingerprint = manifest.system_fingerprint(VISION_ENGINE)
            async with aclosing(self._host.stream(generate)) as events:
                async for event in events:
                    clock.output()
                    if isinstance(event, VisionDone):
                        self._host.metrics.count_tokens(
                            manifest.id, event.prompt_tokens, event.completion_tokens
                        )
                        yield vision_pb2.CreateVisionCompletionResponse(
                            model=manifest.id,
                            system_fingerprint=fingerprint,
                            finish_reason=FINISH_TO_PB[event.finish_reason],
                            usage=common_pb2.Usage(
                                prompt_tokens=event.prompt_tokens,
                                completion_tokens=event.completion_tokens,
                                total_tokens=event.prompt_tokens + event.completion_tokens,
                            ),
                        )
                    else:
                        yield vision_pb2.CreateVisionCompletionResponse(
                            model=manifest.id, delta=event, system_fingerprint=fingerprint
                        )
                    fingerprint = ""  # the first message carries it
