"""POST /v1/audio/transcriptions, /v1/audio/translations and /v1/audio/speech."""

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Request, UploadFile
from fastapi.responses import Response, StreamingResponse

from multai.openai.audio import (
    MAX_UPLOAD_BYTES,
    SpeechRequest,
    TimestampGranularity,
    TranscriptionFormat,
    TranscriptionVerbose,
)
from multai.openai_params import TRANSCRIPTION_BOUNDS
from rest_bridge.auth import admit
from rest_bridge.routes.disconnect import unless_disconnected
from rest_bridge.serving.audio import AudioServing, TranscriptionParams, check_upload

router = APIRouter()
TEMPERATURE = TRANSCRIPTION_BOUNDS["temperature"]
PRIORITY_HEADER = Header(None, description="Queue level 0, 1 or 2; overrides `priority`.")


async def _read_upload(file: UploadFile) -> bytes:
    # One byte past the limit is enough to know the upload is too large.
    return await file.read(MAX_UPLOAD_BYTES + 1)


@router.post("/v1/audio/transcriptions", response_model=TranscriptionVerbose)
async def create_transcription(
    request: Request,
    file: Annotated[
        UploadFile, File(description="The audio: flac, mp3, mp4, mpeg, mpga, m4a, ogg, wav or webm.")
    ],
    model: Annotated[str, Form(min_length=1)],
    language: Annotated[str | None, Form(description="ISO-639-1 code; detected when absent.")] = None,
    prompt: Annotated[str | None, Form()] = None,
    initial_prompt: Annotated[str | None, Form(description="The seed design's name for `prompt`.")] = None,
    response_format: Annotated[TranscriptionFormat, Form()] = "json",
    temperature: Annotated[float | None, Form(ge=TEMPERATURE.low, le=TEMPERATURE.high)] = None,
    timestamp_granularities: Annotated[
        list[TimestampGranularity] | None, Form(alias="timestamp_granularities[]")
    ] = None,
    priority: Annotated[int | None, Form(ge=0, le=2)] = None,
    x_multai_priority: str | None = PRIORITY_HEADER,
) -> Response:
    """Transcribes audio into text in its own language."""
    audio = await _read_upload(file)
    check_upload(audio, timestamp_granularities or [], response_format)
    params = TranscriptionParams(
        model,
        audio,
        file.filename or "",
        response_format,
        prompt or initial_prompt,
        temperature,
        language,
        timestamp_granularities or [],
    )
    serving: AudioServing = request.app.state.audio
    work = serving.transcribe(
        params, await admit(request, model, x_multai_priority, priority), request.state.request_id
    )
    return await unless_disconnected(request, work)


@router.post("/v1/audio/translations", response_model=TranscriptionVerbose)
async def create_translation(
    request: Request,
    file: Annotated[UploadFile, File(description="The audio to translate into English.")],
    model: Annotated[str, Form(min_length=1)],
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[TranscriptionFormat, Form()] = "json",
    temperature: Annotated[float | None, Form(ge=TEMPERATURE.low, le=TEMPERATURE.high)] = None,
    priority: Annotated[int | None, Form(ge=0, le=2)] = None,
    x_multai_priority: str | None = PRIORITY_HEADER,
) -> Response:
    """Transcribes audio into English text."""
    audio = await _read_upload(file)
    check_upload(audio, [], response_format)
    params = TranscriptionParams(
        model, audio, file.filename or "", response_format, prompt, temperature, None, []
    )
    serving: AudioServing = request.app.state.audio
    work = serving.translate(
        params, await admit(request, model, x_multai_priority, priority), request.state.request_id
    )
    return await unless_disconnected(request, work)


@router.post("/v1/audio/speech", response_class=StreamingResponse)
async def create_speech(
    body: SpeechRequest, request: Request, x_multai_priority: str | None = PRIORITY_HEADER
) -> StreamingResponse:
    """Speaks the input; the audio streams as it is synthesised (wav arrives whole, with its real length)."""
    serving: AudioServing = request.app.state.audio
    work = serving.open_speech(
        body, await admit(request, body.model, x_multai_priority, body.priority), request.state.request_id
    )
    content_type, audio = await unless_disconnected(request, work)
    return StreamingResponse(audio, media_type=content_type)
