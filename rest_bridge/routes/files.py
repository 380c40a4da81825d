"""POST, GET and DELETE /v1/files: the Batch API's input files, and the output and error files it writes."""

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, BinaryIO, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse

from multai.batch_store import BatchStore
from multai.openai.files import MAX_FILE_BYTES, FileDeleted, FileList, FileObject
from rest_bridge.errors import OpenAIError
from rest_bridge.usage import current_key

router = APIRouter()
COPY_CHUNK_BYTES = 1024 * 1024
MAX_LIST_LIMIT = 10_000


def owner() -> str | None:
    """The name of the calling key, whose files and batches a request sees; None when the API has no keys."""
    key = current_key.get()
    return key.name if key is not None else None


def file_not_found(file_id: str) -> OpenAIError:
    """OpenAI's 404 for a file that does not exist, has expired or is another key's."""
    return OpenAIError(404, f"No such File object: {file_id}", param="file_id", code="file_not_found")


def _too_large() -> OpenAIError:
    return OpenAIError(
        413, f"a file may hold at most {MAX_FILE_BYTES} bytes", param="file", code="file_too_large"
    )


def _copy(source: BinaryIO, target: Path) -> None:
    with target.open("wb") as out:
        shutil.copyfileobj(source, out, COPY_CHUNK_BYTES)


@router.post("/v1/files", response_model=FileObject)
async def create_file(
    request: Request,
    file: Annotated[UploadFile, File(description="The JSONL input of a batch, up to 200 MB.")],
    purpose: Annotated[Literal["batch"], Form(description="Only `batch` is accepted.")],
    expires_after_anchor: Annotated[Literal["created_at"] | None, Form(alias="expires_after[anchor]")] = None,
    expires_after_seconds: Annotated[
        int | None, Form(alias="expires_after[seconds]", ge=3600, le=2_592_000)
    ] = None,
) -> FileObject:
    """Uploads a file; it expires after `expires_after[seconds]`, else the bridge's file retention.

    The body limit of this path (BodyLimitMiddleware) stops reading an upload soon past 200 MB; the parsed
    file is checked to the byte.
    """
    if file.size is None or file.size > MAX_FILE_BYTES:
        raise _too_large()
    store: BatchStore = request.app.state.batch_store
    staged = store.staging_path()
    await asyncio.to_thread(_copy, file.file, staged)
    filename = file.filename or "upload.jsonl"
    return await asyncio.to_thread(store.add_file, owner(), purpose, filename, staged, expires_after_seconds)


@router.get("/v1/files", response_model=FileList)
async def list_files(
    request: Request,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = MAX_LIST_LIMIT,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> FileList:
    """The caller's files, newest first unless `order=asc`; `after` is the last id of the previous page."""
    store: BatchStore = request.app.state.batch_store
    return await asyncio.to_thread(store.list_files, owner(), purpose, after, limit, order == "desc")


@router.get("/v1/files/{file_id}", response_model=FileObject)
async def retrieve_file(file_id: str, request: Request) -> FileObject:
    """One of the caller's files."""
    store: BatchStore = request.app.state.batch_store
    found = await asyncio.to_thread(store.get_file, owner(), file_id)
    if found is None:
        raise file_not_found(file_id)
    return found


def open_content(path: Path) -> tuple[BinaryIO, int] | None:
    """The file opened, with its size; None when it is gone."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return None
    return handle, os.fstat(handle.fileno()).st_size


async def content_chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(handle.read, COPY_CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()


@router.get("/v1/files/{file_id}/content", response_class=StreamingResponse)
async def file_content(file_id: str, request: Request) -> StreamingResponse:
    """The file's bytes, from a handle opened first: a delete meanwhile cannot cut the answer short."""
    store: BatchStore = request.app.state.batch_store
    path = await asyncio.to_thread(store.file_path, owner(), file_id)
    opened = None if path is None else await asyncio.to_thread(open_content, path)
    if opened is None:
        raise file_not_found(file_id)
    handle, size = opened
    return StreamingResponse(
        content_chunks(handle), media_type="application/octet-stream", headers={"content-length": str(size)}
    )


@router.delete("/v1/files/{file_id}", response_model=FileDeleted)
async def delete_file(file_id: str, request: Request) -> FileDeleted:
    """Deletes one of the caller's files and its bytes."""
    store: BatchStore = request.app.state.batch_store
    if not await asyncio.to_thread(store.delete_file, owner(), file_id):
        raise file_not_found(file_id)
    return FileDeleted(id=file_id, deleted=True)
