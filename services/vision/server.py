"""Builds the vision service from its settings and serves it."""

from typing import Any

import grpc

from multai.model_host import ModelHost
from multai.model_service import serve_model_service
from multai.registry import ModelManifest
from multai.vision.v1 import vision_pb2, vision_pb2_grpc
from services.vision.config import VisionSettings
from services.vision.servicer import VisionServicer


async def serve(settings: VisionSettings) -> None:
    """Serves the vision models found in the models folder until SIGTERM."""

    def make_backend(manifest: ModelManifest) -> Any:
        if manifest.backend == "llava":
            # transformers and torch are heavy to import; the import waits until a model needs them.
            from services.vision.backends.llava import LlavaBackend

            return LlavaBackend(manifest)
        raise ValueError(f"model {manifest.id}: the vision service has no backend {manifest.backend!r}")

    def add_servicers(server: grpc.aio.Server, host: ModelHost[Any]) -> list[str]:
        vision_pb2_grpc.add_VisionServiceServicer_to_server(
            VisionServicer(host, settings.max_images_per_request), server
        )
        return [vision_pb2.DESCRIPTOR.services_by_name["VisionService"].full_name]

    await serve_model_service(settings, "vision", ("vision",), make_backend, add_servicers)
