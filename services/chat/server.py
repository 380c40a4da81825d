"""Builds the chat service from its settings and serves it."""

from typing import Any

import grpc

from multai.chat.v1 import chat_pb2, chat_pb2_grpc
from multai.model_host import ModelHost
from multai.model_service import serve_model_service
from multai.registry import ModelManifest
from services.chat.backends.llama_cpp import LlamaCppBackend
from services.chat.backends.sentence_transformers import SentenceTransformersBackend
from services.chat.config import ChatSettings
from services.chat.servicer import ChatServicer


async def serve(settings: ChatSettings) -> None:
    """Serves the chat models found in the models folder until SIGTERM."""

    def make_backend(manifest: ModelManifest) -> Any:
        if manifest.backend == "sentence_transformers":
            return SentenceTransformersBackend(manifest)
        if manifest.backend == "llama_cpp":
            return LlamaCppBackend(manifest, settings.n_threads, settings.context_length, settings.parallel)
        raise ValueError(f"model {manifest.id}: the chat service has no backend {manifest.backend!r}")

    def add_servicers(server: grpc.aio.Server, host: ModelHost[Any]) -> list[str]:
        chat_pb2_grpc.add_ChatServiceServicer_to_server(ChatServicer(host), server)
        return [chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name]

    await serve_model_service(settings, "chat", ("chat", "embedding"), make_backend, add_servicers)
