"""/v1/audio/*: form fields and JSON to protobuf, transcripts to OpenAI's five formats, speech streamed."""

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from multai.audio.v1 import audio_pb2, audio_pb2_grpc
from multai.common.v1 import common_pb2
from multai.openai.audio import (
    MAX_UPLOAD_BYTES,
    SpeechRequest,
    TimestampGranularity,
    TranscriptionFormat,
    TranscriptionVerbose,
)
from rest_bridge.errors import OpenAIError, invalid_request
from rest_bridge.serving.rpc import call_unary, open_stream
from rest_bridge.usage import meter


@dataclass(frozen=True)
class TranscriptionParams:
    """The form fields of a transcription or translation, validated."""

    model: str
    audio: bytes
    filename: str
    response_format: TranscriptionFormat
    prompt: str | None
    temperature: float | None
    language: str | None
    granularities: list[TimestampGranularity]


def check_upload(audio: bytes, granularities: list[TimestampGranularity], response_format: str) -> None:
    """OpenAI's rules on the file and on timestamp granularities."""
    if len(audio) > MAX_UPLOAD_BYTES:
        raise OpenAIError(
            413,
            f"The file is larger than the maximum of {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.",
            param="file",
            code="file_too_large",
        )
    if not audio:
        raise invalid_request("The file is empty.", "file")
    if granularities and response_format != "verbose_json":
        raise invalid_request(
            "timestamp_granularities requires response_format 'verbose_json'", "timestamp_granularities"
        )


def _timestamp(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def to_srt(transcript: audio_pb2.Transcript) -> str:
    """SubRip: numbered cues, comma before the milliseconds."""
    cues = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(transcript.segments, start=1)
    ]
    return "\n".join(cues) + ("\n" if cues else "")


def to_vtt(transcript: audio_pb2.Transcript) -> str:
    """WebVTT: a header, then cues with a dot before the milliseconds."""
    cues = [
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n"
        for s in transcript.segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def render_transcript(transcript: audio_pb2.Transcript, params: TranscriptionParams, task: str) -> Response:
    """The transcript in the asked response_format."""
    match params.response_format:
        case "json":
            return JSONResponse({"text": transcript.text})
        case "text":
            return PlainTextResponse(transcript.text + "\n")
        case "srt":
            return PlainTextResponse(to_srt(transcript))
        case "vtt":
            return PlainTextResponse(to_vtt(transcript), media_type="text/vtt")
        case _:
            verbose = TranscriptionVerbose.from_pb(transcript, task, params.granularities)
            return JSONResponse(verbose.model_dump(exclude_none=True))


class AudioServing:
    """Calls the audio service."""

    def __init__(self, stub: audio_pb2_grpc.AudioServiceStub, timeout: float) -> None:
        self._stub = stub
        self._timeout = timeout

    async def transcribe(
        self, params: TranscriptionParams, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> Response:
        request = audio_pb2.CreateTranscriptionRequest(
            model=params.model,
            audio=params.audio,
            filename=params.filename,
            language=params.language or "",
            prompt=params.prompt or "",
            temperature=params.temperature,
            word_timestamps="word" in params.granularities,
            priority=priority,
            request_id=request_id,
        )
        response = await call_unary(self._stub.CreateTranscription, request, self._timeout, request_id)
        meter().audio_seconds += response.transcript.duration
        return render_transcript(response.transcript, params, "transcribe")

    async def translate(
        self, params: TranscriptionParams, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> Response:
        request = audio_pb2.CreateTranslationRequest(
            model=params.model,
            audio=params.audio,
            filename=params.filename,
            prompt=params.prompt or "",
            temperature=params.temperature,
            priority=priority,
            request_id=request_id,
        )
        response = await call_unary(self._stub.CreateTranslation, request, self._timeout, request_id)
        meter().audio_seconds += response.transcript.duration
        return render_transcript(response.transcript, params, "translate")

    async def open_speech(
        self, body: SpeechRequest, priority: common_pb2.Priority.ValueType, request_id: str
    ) -> tuple[str, AsyncIterator[bytes]]:
        """The content type and the audio bytes; errors before the first audio raise OpenAIError."""
        message = audio_pb2.CreateSpeechRequest(
            model=body.model,
            input=body.input,
            voice=body.voice,
            response_format=body.response_format,
            speed=body.speed,
            priority=priority,
            request_id=request_id,
        )
        call, first = await open_stream(self._stub.CreateSpeech, message, self._timeout, request_id)

        async def audio() -> AsyncIterator[bytes]:
            # A failure after the headers went out propagates: the server then drops the connection
            # without the final chunk, so the client sees a broken download rather than short audio.
            try:
                yield first.audio
                while (message := await call.read()) is not grpc.aio.EOF:
                    yield message.audio
            finally:
                call.cancel()

        return first.content_type, audio()
