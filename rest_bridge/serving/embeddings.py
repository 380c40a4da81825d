"""/v1/embeddings: the request to protobuf, the vectors back as floats or base64 float32."""

from multai.chat.v1 import chat_pb2_grpc
from multai.common.v1 import common_pb2
from multai.openai.embeddings import CreateEmbeddingResponse, EmbeddingRequest
from rest_bridge.serving.rpc import call_unary
from rest_bridge.usage import meter


class EmbeddingServing:
    """Calls the chat service, which owns the text models."""

    def __init__(self, stub: chat_pb2_grpc.ChatServiceStub, timeout: float) -> None:
        self._stub = stub
        self._timeout = timeout

    async def create(
        self, body: EmbeddingRequest, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> CreateEmbeddingResponse:
        request = body.to_pb(priority, request_id)
        response = await call_unary(self._stub.CreateEmbeddings, request, self._timeout, request_id)
        meter().prompt_tokens += response.usage.prompt_tokens
        return CreateEmbeddingResponse.from_pb(response, body.encoding_format)
