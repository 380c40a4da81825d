"""/v1/embeddings: inputs to protobuf, vectors back as floats or base64 float32."""

from multai.chat.v1 import chat_pb2, chat_pb2_grpc
from multai.common.v1 import common_pb2
from multai.openai.embeddings import EmbeddingData, EmbeddingList, EmbeddingRequest, EmbeddingUsage
from multai.openai_objects import embedding_vector
from multai.openai_params import embedding_inputs
from rest_bridge.errors import invalid_request
from rest_bridge.serving.rpc import call_unary


class EmbeddingServing:
    """Calls the chat service, which owns the text models."""

    def __init__(self, stub: chat_pb2_grpc.ChatServiceStub, timeout: float) -> None:
        self._stub = stub
        self._timeout = timeout

    async def create(
        self, body: EmbeddingRequest, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> EmbeddingList:
        try:
            inputs = embedding_inputs(body.input)
        except ValueError as exc:
            raise invalid_request(str(exc), "input") from exc
        request = chat_pb2.CreateEmbeddingsRequest(
            model=body.model,
            inputs=inputs,
            dimensions=body.dimensions,
            priority=priority,
            request_id=request_id,
        )
        response = await call_unary(self._stub.CreateEmbeddings, request, self._timeout, request_id)
        return EmbeddingList(
            data=[
                EmbeddingData(index=i, embedding=embedding_vector(e.values, body.encoding_format))
                for i, e in enumerate(response.embeddings)
            ],
            model=response.model,
            usage=EmbeddingUsage(
                prompt_tokens=response.usage.prompt_tokens, total_tokens=response.usage.total_tokens
            ),
        )
