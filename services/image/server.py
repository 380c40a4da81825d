"""Builds the image service from its settings and serves it."""

from typing import Any

import grpc

from multai.image.v1 import image_pb2, image_pb2_grpc
from multai.model_host import ModelHost
from multai.model_service import serve_model_service
from multai.registry import ModelManifest
from services.image.config import ImageSettings
from services.image.servicer import ImageServicer


async def serve(settings: ImageSettings) -> None:
    """Serves the image models found in the models folder until SIGTERM."""

    def make_backend(manifest: ModelManifest) -> Any:
        if manifest.backend == "diffusers":
            # diffusers and torch are heavy to import; the import waits until a model needs them.
            from services.image.backends.diffusers import DiffusersBackend

            return DiffusersBackend(manifest)
        raise ValueError(f"model {manifest.id}: the image service has no backend {manifest.backend!r}")

    def add_servicers(server: grpc.aio.Server, host: ModelHost[Any]) -> list[str]:
        image_pb2_grpc.add_ImageServiceServicer_to_server(ImageServicer(host, settings), server)
        return [image_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name]

    await serve_model_service(settings, "image", ("image",), make_backend, add_servicers)
