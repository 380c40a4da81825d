"""/v1/embeddings: inputs to protobuf, vectors back as floats or base64 float32."""

import base64

import numpy as np

from multai.chat.v1 import chat_pb2, chat_pb2_grpc
from multai.common.v1 import common_pb2
from rest_bridge.errors import invalid_request
from rest_bridge.protocol.embeddings import (
    MAX_INPUTS,
    EmbeddingData,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
)
from rest_bridge.serving.rpc import call_unary


def inputs_to_pb(value: str | list[str] | list[int] | list[list[int]]) -> list[chat_pb2.EmbeddingInput]:
    """OpenAI's four input shapes: a string, strings, one token array, token arrays."""
    if isinstance(value, str):
        return [chat_pb2.EmbeddingInput(text=value)]
    if not value:
        raise invalid_request("input must not be empty", "input")
    if len(value) > MAX_INPUTS:
        raise invalid_request(f"input holds more than {MAX_INPUTS} items", "input")
    if all(isinstance(item, int) for item in value):
        return [chat_pb2.EmbeddingInput(tokens=chat_pb2.TokenIds(ids=value))]  # type: ignore[arg-type]
    if all(isinstance(item, list) for item in value):
        return [chat_pb2.EmbeddingInput(tokens=chat_pb2.TokenIds(ids=ids)) for ids in value]  # type: ignore[misc]
    return [chat_pb2.EmbeddingInput(text=text) for text in value]  # type: ignore[misc]


def encode_vector(values: list[float], encoding_format: str) -> list[float] | str:
    """float: the list; base64: little-endian float32 bytes, as OpenAI sends them."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()
    return values


class EmbeddingServing:
    """Calls the chat service, which owns the text models."""

    def __init__(self, stub: chat_pb2_grpc.ChatServiceStub, timeout: float) -> None:
        self._stub = stub
        self._timeout = timeout

    async def create(
        self, body: EmbeddingRequest, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> EmbeddingList:
        request = chat_pb2.CreateEmbeddingsRequest(
            model=body.model,
            inputs=inputs_to_pb(body.input),
            dimensions=body.dimensions,
            priority=priority,
            request_id=request_id,
        )
        response = await call_unary(self._stub.CreateEmbeddings, request, self._timeout, request_id)
        return EmbeddingList(
            data=[
                EmbeddingData(index=i, embedding=encode_vector(list(e.values), body.encoding_format))
                for i, e in enumerate(response.embeddings)
            ],
            model=response.model,
            usage=EmbeddingUsage(
                prompt_tokens=response.usage.prompt_tokens, total_tokens=response.usage.total_tokens
            ),
        )
