"""Pydantic models of /v1/batches, fields in the order of OpenAI's reference."""

from typing import Literal, get_args

from pydantic import BaseModel, Field, field_validator

from multai.openai.common import OpenAIModel
from multai.openai.responses import ResponseUsage

BatchEndpoint = Literal[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/images/generations",
    "/v1/audio/speech",
]
BATCH_ENDPOINTS: tuple[str, ...] = get_args(BatchEndpoint)
BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]
# The statuses after which nothing changes.
FINAL_STATUSES = ("failed", "completed", "expired", "cancelled")
COMPLETION_WINDOW = "24h"
COMPLETION_WINDOW_SECONDS = 24 * 3600
# The metadata key that asks for another priority than background (MultAI's; see docs/batch.md).
PRIORITY_METADATA_KEY = "priority"
# OpenAI's bounds on metadata.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


class OutputExpiresAfter(OpenAIModel):
    """When the output and error files expire, counted from their creation."""

    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=2_592_000)


class BatchCreateRequest(OpenAIModel):
    """The body of POST /v1/batches."""

    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: BatchEndpoint = Field(
        description="The endpoint of the batch; each line may name any of these (OpenAI: the same one)."
    )
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = Field(
        None,
        description='Up to 16 pairs; `priority` "1" runs the batch at normal priority (keys whose tier '
        'allows it), "2" (background) is the default.',
    )
    output_expires_after: OutputExpiresAfter | None = None

    @field_validator("metadata")
    @classmethod
    def _openai_bounds(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > MAX_METADATA_PAIRS:
            raise ValueError(f"metadata holds at most {MAX_METADATA_PAIRS} pairs")
        if any(len(k) > MAX_METADATA_KEY or len(v) > MAX_METADATA_VALUE for k, v in value.items()):
            raise ValueError(
                f"metadata keys are at most {MAX_METADATA_KEY} characters, values {MAX_METADATA_VALUE}"
            )
        if value.get(PRIORITY_METADATA_KEY, "2") not in ("1", "2"):
            raise ValueError('metadata.priority must be "1" (normal) or "2" (background)')
        return value

    def priority_level(self) -> int:
        """The queue level the batch's requests run at."""
        return int((self.metadata or {}).get(PRIORITY_METADATA_KEY, "2"))


class BatchRequestCounts(BaseModel):
    """How many requests the batch has and how many are done."""

    total: int
    completed: int
    failed: int


class BatchError(BaseModel):
    """Why validation refused the input file."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    """The list of validation errors."""

    object: Literal["list"] = "list"
    data: list[BatchError]


class Batch(BaseModel):
    """A batch."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts
    # Tokens of the finished requests, in the shape of a response's usage, as OpenAI's batches have.
    usage: ResponseUsage
    metadata: dict[str, str] | None = None


class BatchList(BaseModel):
    """A page of batches, newest first."""

    object: Literal["list"] = "list"
    data: list[Batch]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
