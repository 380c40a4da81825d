"""Conversations with images: chat messages (and /v1/vision's prompt+image) to the VisionService."""

from multai.common.v1 import common_pb2
from multai.errors import InvalidRequestError
from multai.openai.chat import ChatCompletionRequest
from multai.openai.vision import vision_completion_to_pb
from multai.vision.v1 import vision_pb2_grpc
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

    async def open(
        self, request: ChatCompletionRequest, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> GenerationStream:
        """Starts the generation; errors before the first token raise OpenAIError."""
        try:
            message = await vision_completion_to_pb(request, self._image_inputs.load, priority, request_id)
        except InvalidRequestError as exc:
            raise invalid_request(exc.message, exc.param) from exc
        return await GenerationStream.open(
            self._stub.CreateVisionCompletion, message, self._timeout, request_id
        )
