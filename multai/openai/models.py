"""Pydantic models of /v1/models."""

from typing import Literal

from pydantic import BaseModel

from multai.common.v1 import common_pb2
from multai.openai_objects import model_fields


class ModelCard(BaseModel):
    """One model; `aliases`, `modality`, `fixture` and `resident` are MultAI's additions, `parent` vLLM's
    (the base model of a LoRA adapter)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "multai"
    aliases: list[str]
    modality: str
    backend: str
    fixture: bool
    resident: str | None
    parent: str | None = None

    @classmethod
    def from_pb(cls, info: common_pb2.ModelInfo) -> "ModelCard":
        """A ModelInfo as OpenAI's model object."""
        return cls.model_validate(model_fields(info))


class ModelList(BaseModel):
    """The list."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
