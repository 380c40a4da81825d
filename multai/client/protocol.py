"""Keyword arguments to protobuf requests, and protobuf responses to the SDK-shaped objects.

Shared by the sync and the async client: they differ only in how they call, never in what they send or
how they read the answer. Obvious mistakes raise BadRequestError here, before anything is sent.
"""

import base64
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar, cast

from google.protobuf.message import Message
from pydantic import BaseModel, ValidationError

from multai.audio.v1 import audio_pb2
from multai.chat.v1 import chat_pb2
from multai.client.errors import APIConnectionError, BadRequestError, InternalServerError, NotFoundError
from multai.client.params import (
    ChatCompletionParams,
    CompletionParams,
    EmbeddingParams,
    FileInput,
    ImageGenerateParams,
    Priority,
    RequestOptions,
    SamplingOptions,
    SpeechParams,
    TranscriptionParams,
    TranslationParams,
)
from multai.client.types import BinaryResponseContent, ImageProgress, ModelList
from multai.common.v1 import common_pb2, model_control_pb2
from multai.image.v1 import image_pb2
from multai.openai.audio import Transcription, TranscriptionVerbose
from multai.openai.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from multai.openai.common import OpenAIModel, validation_failure
from multai.openai.completions import Completion, CompletionRequest
from multai.openai.embeddings import CreateEmbeddingResponse, EmbeddingRequest
from multai.openai.generation import (
    ChatChunker,
    ChatReplies,
    CompletionChunker,
    IncompleteStreamError,
    Piece,
    piece_from_pb,
    whole_completion,
)
from multai.openai.images import ImageGenerationRequest, ImagesResponse
from multai.openai.models import ModelCard
from multai.openai_params import (
    PRIORITY_NAMES,
    priority_of_level,
)

Service = Literal["chat", "audio", "image"]
ParamsT = TypeVar("ParamsT", bound=Mapping[str, Any])
ResultT = TypeVar("ResultT")
ResultT_co = TypeVar("ResultT_co", covariant=True)
RequestT = TypeVar("RequestT", bound=OpenAIModel)
# gRPC call metadata: (key, value) pairs.
Metadata = tuple[tuple[str, str], ...]

# Room for a request's other fields next to an uploaded file inside one gRPC message.
REQUEST_OVERHEAD_BYTES = 64 * 1024


def check_params(params: Mapping[str, Any], spec: type[Mapping[str, Any]]) -> None:
    """Refuses unknown and missing keyword arguments as Python refuses them for a plain signature."""
    known = spec.__required_keys__ | spec.__optional_keys__  # type: ignore[attr-defined]
    for name in params:
        if name not in known:
            raise TypeError(f"got an unexpected keyword argument '{name}'")
    missing = [name for name in spec.__required_keys__ if name not in params]  # type: ignore[attr-defined]
    if missing:
        raise TypeError(f"missing required keyword argument(s): {', '.join(sorted(missing))}")


def priority_to_pb(value: Priority) -> common_pb2.Priority.ValueType:
    """0/1/2 or "urgent"/"normal"/"background" as the protobuf enum."""
    level = PRIORITY_NAMES.index(value) if value in PRIORITY_NAMES else value
    priority = None
    if isinstance(level, int) and not isinstance(level, bool):
        priority = priority_of_level(level)
    if priority is None:
        raise BadRequestError(
            "priority must be 0 (urgent), 1 (normal), 2 (background) or one of those names", param="priority"
        )
    return priority


@dataclass(frozen=True)
class CallSettings:
    """What one call sends besides its request (priority, deadline, request id), and its size limit."""

    priority: common_pb2.Priority.ValueType
    timeout: float
    max_message_bytes: int
    request_id: str = field(default_factory=lambda: f"req_{uuid.uuid4().hex}")

    @property
    def metadata(self) -> Metadata:
        """The gRPC metadata that carries the request id into the services' logs."""
        return (("x-request-id", self.request_id),)


def call_settings(
    params: RequestOptions, default_timeout: float, default_priority: Priority, max_message_bytes: int
) -> CallSettings:
    """The call's priority and deadline: its own `priority=`/`timeout=`, else the client's."""
    timeout = params.get("timeout")
    timeout = default_timeout if timeout is None else timeout
    if timeout <= 0:
        raise BadRequestError("timeout must be a positive number of seconds", param="timeout")
    priority = params.get("priority")
    return CallSettings(
        priority_to_pb(default_priority if priority is None else priority), timeout, max_message_bytes
    )


# --- chat and completions -------------------------------------------------------------------------


# Keyword arguments of every call that are the client's, not the request's.
CALL_OPTIONS = RequestOptions.__optional_keys__ | RequestOptions.__required_keys__


def openai_request(model: type[RequestT], params: Mapping[str, Any]) -> RequestT:
    """A call's arguments as the REST bridge's request model: the same checks, then the same protobuf.

    A message may be a response's message object (pydantic, this library's or the openai SDK's) passed
    back as it is.
    """
    body = {key: value for key, value in params.items() if key not in CALL_OPTIONS}
    if "messages" in body:
        body["messages"] = [
            m.model_dump(exclude_none=True) if isinstance(m, BaseModel) else m for m in body["messages"]
        ]
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        message, param = validation_failure(exc.errors())
        raise BadRequestError(message, param=param) from exc


def chat_request(params: ChatCompletionParams, call: CallSettings) -> chat_pb2.CreateChatCompletionRequest:
    """The chat.completions.create arguments as the ChatService request."""
    request = openai_request(ChatCompletionRequest, params)
    for index, message in enumerate(request.messages):
        if message.image_parts():
            raise BadRequestError(
                "image parts need the vision service, which this client does not call; use the REST API",
                param=f"messages.{index}.content",
            )
    return request.to_pb(call.priority, call.request_id)


def completion_request(params: CompletionParams, call: CallSettings) -> chat_pb2.CreateCompletionRequest:
    """The completions.create arguments as the ChatService request; one prompt, one choice."""
    return openai_request(CompletionRequest, params).to_pb(call.priority, call.request_id)


class _GenerationReader:
    """What chat and completion streams share: one id and creation time, and the stream's first piece."""

    def __init__(self, id_prefix: str, include_usage: bool) -> None:
        self.id = f"{id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self._include_usage = include_usage
        self._first: Piece | None = None

    def _piece(self, message: Any) -> Piece:
        piece = piece_from_pb(message)
        self._first = self._first or piece
        return piece


class ChatStreamReader(_GenerationReader):
    """CreateChatCompletion messages as the REST bridge shows them (the same code: multai.openai.generation):
    chunks as they come, and the whole ChatCompletion."""

    def __init__(self, include_usage: bool = False) -> None:
        super().__init__("chatcmpl", include_usage)
        self._chunker: ChatChunker | None = None
        self._replies = ChatReplies()

    def add(self, message: chat_pb2.CreateChatCompletionResponse) -> Piece:
        """Takes in one message of a stream collected whole."""
        piece = self._piece(message)
        self._replies.add(piece)
        return piece

    def chunks(self, message: chat_pb2.CreateChatCompletionResponse) -> list[ChatCompletionChunk]:
        """The chunks one message becomes."""
        piece = self.add(message)
        if self._chunker is None:
            self._chunker = ChatChunker(self.id, self.created, piece, self._include_usage)
        return self._chunker.chunks(piece)

    def result(self) -> ChatCompletion:
        """The whole reply, once the stream has ended."""
        try:
            return self._replies.completion(self.id, self.created)
        except IncompleteStreamError as exc:
            raise InternalServerError(str(exc)) from exc


class CompletionStreamReader(_GenerationReader):
    """CreateCompletion messages as the REST bridge shows them: chunks, and the whole Completion."""

    def __init__(self, include_usage: bool = False) -> None:
        super().__init__("cmpl", include_usage)
        self._chunker: CompletionChunker | None = None
        self._texts: list[str] = []
        self._last: Piece | None = None

    def add(self, message: chat_pb2.CreateCompletionResponse) -> Piece:
        """Takes in one message of a stream collected whole."""
        piece = self._last = self._piece(message)
        self._texts.append(piece.delta)
        return piece

    def chunks(self, message: chat_pb2.CreateCompletionResponse) -> list[Completion]:
        """The chunks one message becomes."""
        piece = self.add(message)
        if self._chunker is None:
            self._chunker = CompletionChunker(self.id, self.created, piece, self._include_usage)
        return self._chunker.chunks(piece)

    def result(self) -> Completion:
        """The whole continuation, once the stream has ended."""
        if self._first is None or self._last is None:
            raise InternalServerError("the service ended the stream without any output")
        try:
            return whole_completion(self.id, self.created, self._first, "".join(self._texts), self._last)
        except IncompleteStreamError as exc:
            raise InternalServerError(str(exc)) from exc


def include_usage(params: SamplingOptions) -> bool:
    """stream_options={"include_usage": True}."""
    return bool((params.get("stream_options") or {}).get("include_usage"))


# --- embeddings -----------------------------------------------------------------------------------


def embeddings_request(params: EmbeddingParams, call: CallSettings) -> chat_pb2.CreateEmbeddingsRequest:
    """OpenAI's four input shapes: a string, strings, one token array, token arrays."""
    return openai_request(EmbeddingRequest, params).to_pb(call.priority, call.request_id)


def embeddings_response(
    response: chat_pb2.CreateEmbeddingsResponse, params: EmbeddingParams
) -> CreateEmbeddingResponse:
    """The vectors as floats, or as base64 of little-endian float32 (what OpenAI sends)."""
    return CreateEmbeddingResponse.from_pb(response, params.get("encoding_format"))


# --- audio ----------------------------------------------------------------------------------------


def read_file(file: FileInput, max_bytes: int) -> tuple[bytes, str]:
    """The bytes and the file name of `file=`: bytes, a path, an open binary file, or (name, content)."""
    name = "upload"
    if isinstance(file, tuple):
        name, file = file
    if isinstance(file, str | os.PathLike):
        path = Path(file)
        name, data = path.name, path.read_bytes()
    elif isinstance(file, bytes | bytearray):
        data = bytes(file)
    elif hasattr(file, "read"):
        data = file.read()
        name = Path(str(getattr(file, "name", name))).name
    else:
        raise BadRequestError(
            "file must be bytes, a path, an open binary file or (name, bytes)", param="file"
        )
    if not data:
        raise BadRequestError("The file is empty.", param="file")
    if len(data) > max_bytes - REQUEST_OVERHEAD_BYTES:
        raise BadRequestError(
            f"The file ({len(data)} bytes) does not fit in one gRPC message of {max_bytes} bytes",
            param="file",
            code="file_too_large",
        )
    return data, name


def _audio_request_fields(params: TranslationParams, call: CallSettings) -> dict[str, Any]:
    """What a transcription and a translation request share: the file, the model, prompt and temperature."""
    if params.get("response_format") not in (None, "json", "text", "verbose_json"):
        raise BadRequestError(
            "response_format must be 'json', 'text' or 'verbose_json' (srt and vtt are the REST API's)",
            param="response_format",
        )
    audio, filename = read_file(params["file"], call.max_message_bytes)
    return {
        "model": params["model"],
        "audio": audio,
        "filename": filename,
        "prompt": params.get("prompt") or "",
        "temperature": params.get("temperature"),
        "priority": call.priority,
        "request_id": call.request_id,
    }


def transcription_request(
    params: TranscriptionParams, call: CallSettings
) -> audio_pb2.CreateTranscriptionRequest:
    """audio.transcriptions.create's arguments as the AudioService request."""
    granularities = params.get("timestamp_granularities") or ()
    if granularities and params.get("response_format") != "verbose_json":
        raise BadRequestError(
            "timestamp_granularities requires response_format 'verbose_json'", param="timestamp_granularities"
        )
    return audio_pb2.CreateTranscriptionRequest(
        language=params.get("language") or "",
        word_timestamps="word" in granularities,
        **_audio_request_fields(params, call),
    )


def translation_request(params: TranslationParams, call: CallSettings) -> audio_pb2.CreateTranslationRequest:
    """audio.translations.create's arguments as the AudioService request."""
    return audio_pb2.CreateTranslationRequest(**_audio_request_fields(params, call))


def transcript_result(
    response: audio_pb2.CreateTranscriptionResponse | audio_pb2.CreateTranslationResponse,
    params: TranscriptionParams | TranslationParams,
) -> Transcription | TranscriptionVerbose | str:
    """json: Transcription; text: the text itself; verbose_json: segments, and words when asked for."""
    transcript = response.transcript
    response_format = params.get("response_format") or "json"
    if response_format == "text":
        return transcript.text
    if response_format == "json":
        return Transcription(text=transcript.text)
    # Only transcriptions take timestamp_granularities; a translation's params lack the key.
    granularities = cast(Sequence[str], params.get("timestamp_granularities") or ())
    task = "translate" if isinstance(response, audio_pb2.CreateTranslationResponse) else "transcribe"
    return TranscriptionVerbose.from_pb(transcript, task, granularities)


def speech_request(params: SpeechParams, call: CallSettings) -> audio_pb2.CreateSpeechRequest:
    """audio.speech.create's arguments; mp3 at normal speed unless asked otherwise, as OpenAI."""
    speed = params.get("speed")
    speed = 1.0 if speed is None else speed
    return audio_pb2.CreateSpeechRequest(
        model=params["model"],
        input=params["input"],
        voice=params["voice"],
        response_format=params.get("response_format") or "mp3",
        speed=speed,
        priority=call.priority,
        request_id=call.request_id,
    )


class SpeechCollector:
    """Joins the audio of a CreateSpeech stream; the content type arrives with the first piece."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._content_type = ""

    def add(self, message: audio_pb2.CreateSpeechResponse) -> None:
        """Keeps one piece of audio."""
        self._content_type = self._content_type or message.content_type
        self._pieces.append(message.audio)

    def result(self) -> BinaryResponseContent:
        """The whole file, once the stream has ended."""
        return BinaryResponseContent(content=b"".join(self._pieces), content_type=self._content_type)


# --- images ---------------------------------------------------------------------------------------


def image_request(params: ImageGenerateParams, call: CallSettings) -> image_pb2.GenerateImagesRequest:
    """images.generate's arguments as the ImageService request."""
    return openai_request(ImageGenerationRequest, params).to_pb(call.priority, call.request_id)


class ImageCollector:
    """Reads a GenerateImages stream: each finished step goes to on_progress, pictures are kept."""

    def __init__(
        self, params: ImageGenerateParams, on_progress: Callable[[ImageProgress], object] | None = None
    ) -> None:
        self._request = openai_request(ImageGenerationRequest, params)
        self._on_progress = on_progress
        self._images: list[image_pb2.GeneratedImage] = []

    def add(self, message: image_pb2.GenerateImagesResponse) -> None:
        """Keeps a finished picture, or reports a finished step."""
        event = message.WhichOneof("event")
        if event == "progress" and self._on_progress is not None:
            self._on_progress(
                ImageProgress(step=message.progress.step, total_steps=message.progress.total_steps)
            )
        elif event == "image":
            self._images.append(message.image)

    def result(self) -> ImagesResponse:
        """The pictures in request order, once the stream has ended; URLs asked for are data URLs."""
        if len(self._images) != self._request.n:
            raise InternalServerError(
                f"the service returned {len(self._images)} images, not {self._request.n}"
            )
        self._images.sort(key=lambda image: image.index)
        urls = [f"data:image/png;base64,{base64.b64encode(image.png).decode()}" for image in self._images]
        return ImagesResponse.from_pb(self._images, self._request, urls)


# --- models ---------------------------------------------------------------------------------------


def model_from_pb(info: common_pb2.ModelInfo) -> ModelCard:
    """A ModelInfo as the SDK's Model, with MultAI's extra fields (the REST bridge's ModelCard)."""
    return ModelCard.from_pb(info)


def model_list(listings: Iterable[model_control_pb2.ListModelsResponse | APIConnectionError]) -> ModelList:
    """The models of the services that answered, in id order; a model two of them list appears once.

    A service that is down must not hide the models of the others, so its failure is raised only when no
    service answered.
    """
    responses: list[model_control_pb2.ListModelsResponse] = []
    failures: list[APIConnectionError] = []
    for listing in listings:
        if isinstance(listing, APIConnectionError):
            failures.append(listing)
        else:
            responses.append(listing)
    if failures and not responses:
        raise failures[0]
    unique = {info.id: info for response in responses for info in response.models}
    return ModelList(data=[model_from_pb(unique[model_id]) for model_id in sorted(unique)])


def find_model(models: ModelList, name: str) -> ModelCard:
    """The model that an id or alias names."""
    for model in models.data:
        if name == model.id or name in model.aliases:
            return model
    raise NotFoundError(f"The model '{name}' does not exist", code="model_not_found", param="model")


# --- the calls ------------------------------------------------------------------------------------


class Collector(Protocol[ResultT_co]):
    """Reads a server stream: every message goes to add(), then result() is the call's answer."""

    def add(self, message: Any) -> object:
        """Takes one message."""
        ...

    def result(self) -> ResultT_co:
        """The answer, once the stream has ended."""
        ...


@dataclass(frozen=True)
class Rpc(Generic[ParamsT]):
    """One method of a service: the keyword arguments it takes and how they become its request."""

    service: Service
    method: str
    params: type[ParamsT]
    build: Callable[[ParamsT, CallSettings], Message]


@dataclass(frozen=True)
class UnaryRpc(Rpc[ParamsT], Generic[ParamsT, ResultT]):
    """A method with one response, and how that response (with the arguments) becomes the result."""

    read: Callable[[Any, ParamsT], ResultT]


CHAT_COMPLETION = Rpc("chat", "CreateChatCompletion", ChatCompletionParams, chat_request)
COMPLETION = Rpc("chat", "CreateCompletion", CompletionParams, completion_request)
EMBEDDINGS = UnaryRpc("chat", "CreateEmbeddings", EmbeddingParams, embeddings_request, embeddings_response)
TRANSCRIPTION = UnaryRpc(
    "audio", "CreateTranscription", TranscriptionParams, transcription_request, transcript_result
)
TRANSLATION = UnaryRpc(
    "audio", "CreateTranslation", TranslationParams, translation_request, transcript_result
)
SPEECH = Rpc("audio", "CreateSpeech", SpeechParams, speech_request)
GENERATE_IMAGES = Rpc("image", "GenerateImages", ImageGenerateParams, image_request)
