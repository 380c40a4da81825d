"""/v1/images/generations: request JSON to protobuf, the ImageService stream back to OpenAI JSON.

Images asked for as URLs are written to a local store and served by the bridge until they expire.
"""

import asyncio
import contextlib
import logging
import secrets
import time
from pathlib import Path

import grpc

from multai.common.v1 import common_pb2
from multai.image.v1 import image_pb2, image_pb2_grpc
from multai.openai.images import ImageGenerationRequest, ImagesResponse
from rest_bridge.errors import OpenAIError, from_rpc_error
from rest_bridge.serving.rpc import open_stream
from rest_bridge.usage import meter

log = logging.getLogger(__name__)
IMAGE_FILE_SUFFIX = ".png"
# 32 random bytes: URLs cannot be guessed, which is what keeps one caller from reading another's images.
IMAGE_NAME_BYTES = 32


class ImageStore:
    """PNG files under one folder, each readable for ttl seconds after it was written."""

    def __init__(self, folder: Path, ttl_seconds: float) -> None:
        self.folder = folder
        self.ttl_seconds = ttl_seconds
        folder.mkdir(parents=True, exist_ok=True)

    def put(self, png: bytes) -> str:
        """Stores one image; returns its file name."""
        name = secrets.token_urlsafe(IMAGE_NAME_BYTES) + IMAGE_FILE_SUFFIX
        partial = self.folder / f".{name}.partial"
        partial.write_bytes(png)
        partial.rename(self.folder / name)
        return name

    def path_of(self, name: str) -> Path | None:
        """The file of a stored, unexpired image; None for unknown, malformed or expired names."""
        if Path(name).name != name or not name.endswith(IMAGE_FILE_SUFFIX) or name.startswith("."):
            return None
        path = self.folder / name
        try:
            written = path.stat().st_mtime
        except FileNotFoundError:
            return None
        return path if time.time() - written < self.ttl_seconds else None

    def delete_expired(self) -> int:
        """Deletes images older than the ttl (and partial files left by a crash); returns how many."""
        deadline = time.time() - self.ttl_seconds
        deleted = 0
        for path in self.folder.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < deadline:
                    path.unlink()
                    deleted += 1
        return deleted

    async def sweep_forever(self) -> None:
        """Deletes expired images every so often, until cancelled."""
        interval = min(self.ttl_seconds, 60.0)
        while True:
            # A failed sweep (folder removed, permissions) must not end the task: nothing would delete again.
            try:
                deleted = await asyncio.to_thread(self.delete_expired)
            except OSError as exc:
                log.warning("could not delete expired images: %s", exc)
                deleted = 0
            if deleted:
                log.info("deleted %d expired images", deleted)
            await asyncio.sleep(interval)


class ImageServing:
    """Generates images with the image service and returns them inline or as store URLs."""

    def __init__(self, stub: image_pb2_grpc.ImageServiceStub, store: ImageStore, timeout: float) -> None:
        self._stub = stub
        self._store = store
        self._timeout = timeout

    async def generate(
        self,
        request: ImageGenerationRequest,
        priority: common_pb2.Priority.ValueType,
        request_id: str,
        files_url: str,
    ) -> ImagesResponse:
        """Runs the generation to the end; files_url is the base URL the stored images are served under."""
        message = request.to_pb(priority, request_id)
        call, event = await open_stream(self._stub.GenerateImages, message, self._timeout, request_id)
        images: list[image_pb2.GeneratedImage] = []
        try:
            while event is not grpc.aio.EOF:
                if event.WhichOneof("event") == "image":
                    images.append(event.image)
                event = await call.read()
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            call.cancel()
        if len(images) != request.n:
            raise OpenAIError(
                502, f"the image service returned {len(images)} images, not {request.n}", type="server_error"
            )
        meter().images += len(images)
        if request.wants_base64():
            return ImagesResponse.from_pb(images, request)
        images.sort(key=lambda image: image.index)
        names = [await asyncio.to_thread(self._store.put, image.png) for image in images]
        return ImagesResponse.from_pb(images, request, [f"{files_url}/{name}" for name in names])
