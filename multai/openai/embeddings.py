"""Pydantic models of /v1/embeddings."""

from typing import Literal

from pydantic import BaseModel, Field

from multai.openai.common import Prioritized


class EmbeddingRequest(Prioritized):
    """The request body; token-id inputs are ids of the model's own tokenizer."""

    input: str | list[str] | list[int] | list[list[int]] = Field(description="Text or token ids to embed.")
    model: str = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class EmbeddingData(BaseModel):
    """One vector."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    """Tokens read."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    """The response."""

    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
