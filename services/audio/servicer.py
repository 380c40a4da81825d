"""AudioService: the only place this service touches protobuf."""

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import grpc

from multai.audio.v1 import audio_pb2, audio_pb2_grpc
from multai.common.v1 import common_pb2
from multai.errors import InvalidRequestError
from multai.model_host import ModelHost
from multai.openai.audio import SPEECH_CONTENT_TYPES
from multai.openai_params import TRANSCRIPTION_BOUNDS, check_bounds
from multai.registry import ModelManifest
from services.audio.backends.base import TranscribeOptions, TranscriptResult, UnknownVoiceError
from services.audio.backends.whisper import LANGUAGE_NAMES
from services.audio.codecs import SpeechEncoder, UndecodableAudioError, decode_for_whisper

SPEECH_TO_TEXT_BACKENDS = {"faster_whisper"}
TEXT_TO_SPEECH_BACKENDS = {"piper", "bark"}
MIN_SPEED, MAX_SPEED = 0.25, 4.0


def transcript_to_pb(model: str, result: TranscriptResult) -> audio_pb2.Transcript:
    """A transcript as protobuf."""
    return audio_pb2.Transcript(
        model=model,
        text=result.text,
        language=result.language,
        duration=result.duration,
        segments=[
            audio_pb2.Segment(
                id=s.id,
                seek=s.seek,
                start=s.start,
                end=s.end,
                text=s.text,
                tokens=s.tokens,
                temperature=s.temperature,
                avg_logprob=s.avg_logprob,
                compression_ratio=s.compression_ratio,
                no_speech_prob=s.no_speech_prob,
            )
            for s in result.segments
        ],
        words=[audio_pb2.Word(word=w.word, start=w.start, end=w.end) for w in result.words],
    )


class AudioServicer(audio_pb2_grpc.AudioServiceServicer):
    """Transcribes, translates and speaks, each inference under a scheduler lease."""

    def __init__(self, host: ModelHost[Any], max_speech_input_chars: int) -> None:
        self._host = host
        self._max_speech_input_chars = max_speech_input_chars

    async def CreateTranscription(
        self, request: audio_pb2.CreateTranscriptionRequest, context: grpc.aio.ServicerContext
    ) -> audio_pb2.CreateTranscriptionResponse:
        manifest = self._host.registry.resolve_for(request.model, SPEECH_TO_TEXT_BACKENDS, "transcription")
        check_bounds(request, TRANSCRIPTION_BOUNDS)
        language = request.language.lower() or None
        if language is not None and language not in LANGUAGE_NAMES:
            raise InvalidRequestError(
                f"'{request.language}' is not an ISO-639-1 code Whisper knows", param="language"
            )
        options = TranscribeOptions(
            task="transcribe",
            language=language,
            prompt=request.prompt or None,
            temperature=request.temperature if request.HasField("temperature") else None,
            word_timestamps=request.word_timestamps,
        )
        result = await self._transcribe(
            manifest, request.audio, request.filename, options, request.priority, request.request_id
        )
        return audio_pb2.CreateTranscriptionResponse(transcript=transcript_to_pb(manifest.id, result))

    async def CreateTranslation(
        self, request: audio_pb2.CreateTranslationRequest, context: grpc.aio.ServicerContext
    ) -> audio_pb2.CreateTranslationResponse:
        manifest = self._host.registry.resolve_for(request.model, SPEECH_TO_TEXT_BACKENDS, "translation")
        check_bounds(request, TRANSCRIPTION_BOUNDS)
        if not manifest.defaults.get("multilingual", True):
            multilingual = [
                m.id
                for m in self._host.registry.models()
                if m.backend in SPEECH_TO_TEXT_BACKENDS and m.defaults.get("multilingual", True)
            ]
            raise InvalidRequestError(
                f"'{manifest.id}' is English-only and cannot translate; use a multilingual model: "
                f"{', '.join(multilingual) or 'none installed'}",
                param="model",
            )
        options = TranscribeOptions(
            task="translate",
            prompt=request.prompt or None,
            temperature=request.temperature if request.HasField("temperature") else None,
        )
        result = await self._transcribe(
            manifest, request.audio, request.filename, options, request.priority, request.request_id
        )
        return audio_pb2.CreateTranslationResponse(transcript=transcript_to_pb(manifest.id, result))

    async def _transcribe(
        self,
        manifest: ModelManifest,
        data: bytes,
        filename: str,
        options: TranscribeOptions,
        priority: common_pb2.Priority.ValueType,
        request_id: str,
    ) -> TranscriptResult:
        # Decoding needs no device: it runs before the lease, so the queue only holds real inference.
        try:
            audio = await self._host.run_blocking(decode_for_whisper, data)
        except UndecodableAudioError as exc:
            raise InvalidRequestError(
                f"Could not decode '{filename or 'file'}' as audio ({exc}). Supported formats: flac, m4a, "
                "mp3, mp4, mpeg, mpga, oga, ogg, wav, webm.",
                param="file",
            ) from exc
        async with self._host.leased(manifest, priority, request_id) as backend:
            result: TranscriptResult = await self._host.run_blocking(backend.transcribe, audio, options)
        self._host.metrics.audio_seconds.labels(manifest.id).inc(result.duration)
        return result

    async def CreateSpeech(
        self, request: audio_pb2.CreateSpeechRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[audio_pb2.CreateSpeechResponse]:
        manifest = self._host.registry.resolve_for(request.model, TEXT_TO_SPEECH_BACKENDS, "speech")
        text = request.input.strip()
        if not text:
            raise InvalidRequestError("input must not be empty", param="input")
        if len(request.input) > self._max_speech_input_chars:
            raise InvalidRequestError(
                f"input is longer than {self._max_speech_input_chars} characters", param="input"
            )
        response_format = request.response_format or "mp3"
        if response_format not in SPEECH_CONTENT_TYPES:
            raise InvalidRequestError(
                f"response_format must be one of {', '.join(SPEECH_CONTENT_TYPES)}", param="response_format"
            )
        speed = request.speed or 1.0
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise InvalidRequestError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}", param="speed")
        backend_for_voices = self._host.backend_of(manifest.id)
        try:
            voice = backend_for_voices.resolve_voice(request.voice or "alloy")
        except UnknownVoiceError as exc:
            raise InvalidRequestError(str(exc), param="voice") from exc

        encoder = SpeechEncoder(response_format)
        content_type = encoder.content_type

        def encoded(backend: Any, cancel: threading.Event) -> Iterator[bytes]:
            # Encoding in the engine thread, right after each sentence, keeps the event loop free.
            for chunk in backend.synthesize(text, voice, speed, cancel):
                yield encoder.encode(chunk)

        async with (
            self._host.leased(manifest, request.priority, request.request_id) as backend,
            aclosing(self._host.stream(lambda cancel: encoded(backend, cancel))) as pieces,
        ):
            async for data in pieces:
                if data:
                    yield audio_pb2.CreateSpeechResponse(audio=data, content_type=content_type)
                    content_type = ""
        tail = await self._host.run_blocking(encoder.finish)
        yield audio_pb2.CreateSpeechResponse(audio=tail, content_type=content_type)
