"""POST and GET /v1/batches: batches of requests that run behind interactive work (see batch_worker)."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request

from multai.batch_store import BatchStore
from multai.openai.batches import PRIORITY_METADATA_KEY, Batch, BatchCreateRequest, BatchList
from multai.openai_params import PRIORITY_NAMES
from rest_bridge.errors import OpenAIError, invalid_request
from rest_bridge.routes.files import file_not_found, owner
from rest_bridge.usage import current_key

router = APIRouter()


def _batch_not_found(batch_id: str) -> OpenAIError:
    return OpenAIError(404, f"No such Batch object: {batch_id}", param="batch_id", code="batch_not_found")


@router.post("/v1/batches", response_model=Batch)
async def create_batch(body: BatchCreateRequest, request: Request) -> Batch:
    """Creates a batch from an uploaded JSONL file; it runs at background priority unless an administrator
    (a key whose tier allows it, or any caller of an API without keys) asks for `metadata.priority` "1"."""
    key = current_key.get()
    level = body.priority_level()
    if key is not None and not key.allows_priority(level):
        raise OpenAIError(
            403,
            f"this API key may not run a batch at priority {level} ({PRIORITY_NAMES[level]})",
            type="permission_error",
            param=f"metadata.{PRIORITY_METADATA_KEY}",
            code="priority_not_allowed",
        )
    store: BatchStore = request.app.state.batch_store
    try:
        return await asyncio.to_thread(store.create_batch, owner(), body)
    except LookupError as exc:
        raise file_not_found(body.input_file_id) from exc
    except ValueError as exc:
        raise invalid_request(f"input_file_id: {exc}", "input_file_id") from exc


@router.get("/v1/batches", response_model=BatchList)
async def list_batches(
    request: Request, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> BatchList:
    """The caller's batches, newest first; `after` is the last id of the previous page."""
    store: BatchStore = request.app.state.batch_store
    return await asyncio.to_thread(store.list_batches, owner(), after, limit)


@router.get("/v1/batches/{batch_id}", response_model=Batch)
async def retrieve_batch(batch_id: str, request: Request) -> Batch:
    """One of the caller's batches, with its progress."""
    store: BatchStore = request.app.state.batch_store
    found = await asyncio.to_thread(store.get_batch, owner(), batch_id)
    if found is None:
        raise _batch_not_found(batch_id)
    return found


@router.post("/v1/batches/{batch_id}/cancel", response_model=Batch)
async def cancel_batch(batch_id: str, request: Request) -> Batch:
    """Cancels a batch: no new line starts, and it becomes `cancelled` once the lines in flight end, with an
    output file of what finished."""
    store: BatchStore = request.app.state.batch_store
    try:
        found = await asyncio.to_thread(store.cancel_batch, owner(), batch_id)
    except ValueError as exc:
        raise OpenAIError(409, str(exc).capitalize(), code="batch_not_cancellable") from exc
    if found is None:
        raise _batch_not_found(batch_id)
    return found
