"""Pydantic models of /v1/models."""

from typing import Literal

from pydantic import BaseModel


class ModelCard(BaseModel):
    """One model; `aliases`, `modality`, `fixture` and `resident` are MultAI's additions."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "multai"
    aliases: list[str]
    modality: str
    backend: str
    fixture: bool
    resident: str | None


class ModelList(BaseModel):
    """The list."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
