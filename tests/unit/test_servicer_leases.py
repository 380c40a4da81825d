"""A servicer whose RPC is cancelled lets go of its lease only after the engine thread has stopped."""

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from multai.image.v1 import image_pb2
from multai.model_host import ModelHost
from multai.registry import ModelRegistry
from services.image.backends.base import FinishedImage, ImageRequest, StepDone
from services.image.config import ImageSettings
from services.image.servicer import ImageServicer


class SlowBackend:
    """Reports a step, then takes a while over the next one, as a real denoising step does."""

    def __init__(self) -> None:
        self.running = threading.Event()

    def generate(self, request: ImageRequest, cancel: threading.Event) -> Iterator[StepDone | FinishedImage]:
        self.running.set()
        try:
            yield StepDone(1, 2)
            cancel.wait(0.5)
            yield StepDone(2, 2)
        finally:
            self.running.clear()


class RecordingHost(ModelHost[Any]):
    """The real stream(); a lease that records whether the engine was still running when it ended."""

    def __init__(self, folder: Path, backend: SlowBackend) -> None:
        super().__init__("test", ModelRegistry.scan(folder), lambda manifest: None, "127.0.0.1:9", 1.0)
        self.registry = SimpleNamespace(  # type: ignore[assignment]
            resolve_for=lambda *args: SimpleNamespace(
                id="painter", defaults={}, int_default=lambda name, fallback: fallback
            )
        )
        self.backend = backend
        self.engine_running_at_release: bool | None = None

    @asynccontextmanager
    async def leased(self, *args: object, **kwargs: object) -> AsyncIterator[SlowBackend]:
        try:
            yield self.backend
        finally:
            self.engine_running_at_release = self.backend.running.is_set()


async def test_a_cancelled_generation_releases_its_lease_after_the_engine_stops(tmp_path: Path) -> None:
    host = RecordingHost(tmp_path, SlowBackend())
    servicer = ImageServicer(host, ImageSettings())
    request = image_pb2.GenerateImagesRequest(model="painter", prompt="a cat", width=64, height=64)
    responses = servicer.GenerateImages(request, None)  # type: ignore[arg-type]
    first = await anext(responses)
    assert first.progress.step == 1
    # What grpc does with a handler whose client went away.
    await responses.aclose()
    assert host.engine_running_at_release is False
