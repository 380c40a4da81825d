"""Pydantic models of /v1/embeddings, with the protobuf request and response beside them."""

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from multai.chat.v1 import chat_pb2
from multai.common.v1 import common_pb2
from multai.openai.common import Prioritized, TokenId
from multai.openai_objects import embedding_vector
from multai.openai_params import INT32_MAX, embedding_inputs


class EmbeddingRequest(Prioritized):
    """The request body; token-id inputs are ids of the model's own tokenizer."""

    input: str | list[str] | list[TokenId] | list[list[TokenId]] = Field(
        description="Text or token ids to embed."
    )
    model: str = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=INT32_MAX)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _one_of_openais_shapes(
        cls, value: str | list[str] | list[int] | list[list[int]]
    ) -> str | list[str] | list[int] | list[list[int]]:
        embedding_inputs(value)  # raises ValueError naming the fault
        return value

    def to_pb(
        self, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> chat_pb2.CreateEmbeddingsRequest:
        """The ChatService request."""
        return chat_pb2.CreateEmbeddingsRequest(
            model=self.model,
            inputs=embedding_inputs(self.input),
            dimensions=self.dimensions,
            priority=priority,
            request_id=request_id,
        )


class Embedding(BaseModel):
    """One vector: floats, or base64 of little-endian float32 when asked for."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    """Tokens read."""

    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    """The response: the vectors, in input order."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage

    @classmethod
    def from_pb(
        cls, response: chat_pb2.CreateEmbeddingsResponse, encoding_format: str | None
    ) -> "CreateEmbeddingResponse":
        """The ChatService answer, vectors encoded as asked."""
        return cls(
            data=[
                Embedding(index=i, embedding=embedding_vector(e.values, encoding_format))
                for i, e in enumerate(response.embeddings)
            ],
            model=response.model,
            usage=EmbeddingUsage(
                prompt_tokens=response.usage.prompt_tokens, total_tokens=response.usage.total_tokens
            ),
        )
