"""Builds the chat service from its settings and serves it."""

import grpc

from multai.chat.v1 import chat_pb2, chat_pb2_grpc
from multai.common.v1 import model_control_pb2, model_control_pb2_grpc
from multai.grpc_server import run_grpc_server
from multai.model_control import ModelControlServicer
from multai.model_host import ModelHost
from multai.registry import ModelManifest, ModelRegistry
from services.chat.backends.base import ChatBackend
from services.chat.backends.llama_cpp import LlamaCppBackend
from services.chat.config import ChatSettings
from services.chat.servicer import ChatServicer


async def serve(settings: ChatSettings) -> None:
    """Serves the chat models found in the models folder until SIGTERM."""
    registry = ModelRegistry.scan(settings.models_dir, modality="chat")

    def make_backend(manifest: ModelManifest) -> ChatBackend:
        return LlamaCppBackend(manifest, settings.n_threads, settings.context_length)

    host: ModelHost[ChatBackend] = ModelHost(
        "chat", registry, make_backend, settings.scheduler_address, settings.lease_wait_seconds
    )

    def add_servicers(server: grpc.aio.Server) -> list[str]:
        chat_pb2_grpc.add_ChatServiceServicer_to_server(ChatServicer(host), server)
        model_control_pb2_grpc.add_ModelControlServiceServicer_to_server(ModelControlServicer(host), server)
        return [
            chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
            model_control_pb2.DESCRIPTOR.services_by_name["ModelControlService"].full_name,
        ]

    async def on_started() -> None:
        await host.start(settings.scheduler_connect_seconds)

    await run_grpc_server(settings, add_servicers, on_started=on_started, on_stopping=host.stop)
