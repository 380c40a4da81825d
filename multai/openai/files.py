"""Pydantic models of /v1/files, fields in the order of OpenAI's reference."""

from typing import Literal

from pydantic import BaseModel, Field

# OpenAI's purposes; this mesh accepts uploads for `batch` and writes `batch_output` itself.
FilePurpose = Literal[
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
]
UPLOAD_PURPOSES = ("batch",)
# OpenAI's limit on one file.
MAX_FILE_BYTES = 200 * 1024 * 1024


class FileObject(BaseModel):
    """A stored file."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: FilePurpose
    status: Literal["uploaded", "processed", "error"] = Field(
        "processed", description="Deprecated by OpenAI."
    )
    status_details: str | None = None


class FileList(BaseModel):
    """A page of files, newest first unless `order=asc`."""

    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(BaseModel):
    """The answer to a delete."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool
