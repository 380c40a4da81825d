"""Builds the audio service from its settings and serves it."""

from typing import Any

import grpc

from multai.audio.v1 import audio_pb2, audio_pb2_grpc
from multai.model_host import ModelHost
from multai.model_service import serve_model_service
from multai.registry import ModelManifest
from services.audio.backends.piper import PiperBackend
from services.audio.backends.whisper import WhisperBackend
from services.audio.config import AudioSettings
from services.audio.servicer import AudioServicer


async def serve(settings: AudioSettings) -> None:
    """Serves the audio models found in the models folder until SIGTERM."""

    def make_backend(manifest: ModelManifest) -> Any:
        if manifest.backend == "faster_whisper":
            return WhisperBackend(manifest, settings.cpu_threads, settings.vad_filter)
        if manifest.backend == "piper":
            return PiperBackend(manifest)
        if manifest.backend == "bark":
            # transformers is heavy to import; only hosts with a Bark model pay for it.
            from services.audio.backends.bark import BarkBackend

            return BarkBackend(manifest)
        raise ValueError(f"model {manifest.id}: the audio service has no backend {manifest.backend!r}")

    def add_servicers(server: grpc.aio.Server, host: ModelHost[Any]) -> list[str]:
        audio_pb2_grpc.add_AudioServiceServicer_to_server(
            AudioServicer(host, settings.max_speech_input_chars), server
        )
        return [audio_pb2.DESCRIPTOR.services_by_name["AudioService"].full_name]

    await serve_model_service(settings, "audio", ("audio",), make_backend, add_servicers)
