"""Chat requests for vision models as VisionService requests, and the seed design's /v1/vision."""

from collections.abc import Awaitable, Callable

from pydantic import Field

from multai.common.v1 import common_pb2
from multai.errors import InvalidRequestError
from multai.openai.chat import ChatCompletionRequest, ChatMessageParam, TextContentPart
from multai.openai.common import SamplingFields
from multai.vision.v1 import vision_pb2

# Reads an image part's URL (and names the parameter for errors) into the image file's bytes.
ImageLoader = Callable[[str, str], Awaitable[bytes]]


def refuse_what_vision_cannot_carry(request: ChatCompletionRequest) -> None:
    """Refuses the chat fields the VisionService request has no room for, rather than dropping them.

    The vision service checks everything its request does carry (roles, stops, sampling, images).
    """
    refused = {
        "response_format": request.response_format is not None and request.response_format.type != "text",
        "n": request.n > 1,
        "tools": bool(request.tools),
        "tool_choice": request.tool_choice not in (None, "none"),
        "logprobs": bool(request.logprobs),
        "top_logprobs": bool(request.top_logprobs),
        "n_threads": request.n_threads is not None,
        "n_gpu_layers": request.n_gpu_layers is not None,
    }
    for name, used in refused.items():
        if used:
            raise InvalidRequestError(f"'{name}' is not supported by vision models", param=name)
    for index, message in enumerate(request.messages):
        if message.tool_calls:
            raise InvalidRequestError("vision models take no tool calls", param=f"messages[{index}]")


async def vision_message_to_pb(
    message: ChatMessageParam, index: int, load_image: ImageLoader
) -> vision_pb2.VisionMessage:
    """One chat message as a VisionMessage, its images read by load_image."""
    if not isinstance(message.content, list):
        return vision_pb2.VisionMessage(
            role=message.role, parts=[vision_pb2.ContentPart(text=message.text())]
        )
    parts = []
    for part_index, part in enumerate(message.content):
        if isinstance(part, TextContentPart):
            parts.append(vision_pb2.ContentPart(text=part.text))
        else:
            param = f"messages[{index}].content[{part_index}].image_url.url"
            parts.append(vision_pb2.ContentPart(image=await load_image(part.image_url.url, param)))
    return vision_pb2.VisionMessage(role=message.role, parts=parts)


async def vision_completion_to_pb(
    request: ChatCompletionRequest,
    load_image: ImageLoader,
    priority: common_pb2.Priority.ValueType,
    request_id: str,
) -> vision_pb2.CreateVisionCompletionRequest:
    """A chat request for a vision model as the VisionService request; raises InvalidRequestError."""
    refuse_what_vision_cannot_carry(request)
    return vision_pb2.CreateVisionCompletionRequest(
        model=request.model,
        messages=[await vision_message_to_pb(m, i, load_image) for i, m in enumerate(request.messages)],
        sampling=request.chat_sampling_to_pb(),
        priority=priority,
        request_id=request_id,
    )


class VisionRequest(SamplingFields):
    """The request body; the answer is a chat completion (streamed when `stream` is true)."""

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    image: str = Field(
        min_length=1,
        description="A data URL, bare base64 of an image file, or an http(s) URL of an allowed host.",
    )

    def as_chat(self) -> ChatCompletionRequest:
        """The same request as one user message with the image before the prompt."""
        # Bare base64 becomes a data URL without a media type; the vision service reads the format itself.
        url = (
            self.image
            if self.image.startswith(("data:", "http:", "https:"))
            else f"data:;base64,{self.image}"
        )
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": self.prompt}]
        fields = self.model_dump(exclude={"prompt", "image"}, exclude_none=True)
        return ChatCompletionRequest.model_validate(
            {**fields, "messages": [{"role": "user", "content": content}]}
        )
