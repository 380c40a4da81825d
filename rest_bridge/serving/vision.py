"""Conversations with images: chat messages (and /v1/vision's prompt+image) to the VisionService."""

from multai.common.v1 import common_pb2
from multai.openai.chat import ChatCompletionRequest, ChatMessageParam, TextContentPart
from multai.vision.v1 import vision_pb2, vision_pb2_grpc
from rest_bridge.errors import invalid_request
from rest_bridge.serving.generation import GenerationStream
from rest_bridge.serving.image_input import ImageInputs


class VisionServing:
    """Runs vision completions against the vision service."""

    def __init__(
        self, stub: vision_pb2_grpc.VisionServiceStub, image_inputs: ImageInputs, timeout: float
    ) -> None:
        self._stub = stub
        self._image_inputs = image_inputs
        self._timeout = timeout

    async def _message_to_pb(self, message: ChatMessageParam, index: int) -> vision_pb2.VisionMessage:
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
                parts.append(
                    vision_pb2.ContentPart(image=await self._image_inputs.load(part.image_url.url, param))
                )
        return vision_pb2.VisionMessage(role=message.role, parts=parts)

    async def open(
        self, request: ChatCompletionRequest, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> GenerationStream:
        """Starts the generation; errors before the first token raise OpenAIError."""
        # LLaVA has no grammar-constrained decoding, tool protocol or per-token scores here: refuse these
        # rather than ignore them.
        refused = {
            "response_format": request.response_format is not None and request.response_format.type != "text",
            "n": request.n > 1,
            "tools": bool(request.tools),
            "tool_choice": request.tool_choice not in (None, "none"),
            "logprobs": bool(request.logprobs),
            "top_logprobs": bool(request.top_logprobs),
            "logit_bias": bool(request.logit_bias),
        }
        for name, used in refused.items():
            if used:
                raise invalid_request(f"'{name}' is not supported by vision models", name)
        for index, chat_message in enumerate(request.messages):
            if chat_message.role == "tool" or chat_message.tool_calls:
                raise invalid_request(
                    "vision models take no tool calls or tool results", f"messages[{index}]"
                )
        message = vision_pb2.CreateVisionCompletionRequest(
            model=request.model,
            messages=[await self._message_to_pb(m, i) for i, m in enumerate(request.messages)],
            sampling=request.sampling_to_pb(request.token_limit()),
            priority=priority,
            request_id=request_id,
        )
        return await GenerationStream.open(
            self._stub.CreateVisionCompletion, message, self._timeout, request_id
        )
