"""The client's calls: AsyncMultAI (grpc.aio channels) in async_client.py, and MultAI (plain channels) in
sync_client.py, which scripts/unasync_client.py generates from it: edit async_client.py, then run it."""

from collections.abc import AsyncIterator, Callable, Mapping
from functools import cached_property
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, Unpack, overload

from multai.client import _aio, protocol
from multai.client.base import ClientBase
from multai.client.errors import APIConnectionError, rpc_errors
from multai.client.params import (
    ChatCompletionParams,
    CompletionParams,
    EmbeddingParams,
    ImageGenerateParams,
    RequestOptions,
    SpeechParams,
    TranscriptionParams,
    TranslationParams,
)
from multai.client.protocol import Metadata
from multai.client.types import (
    BinaryResponseContent,
    ImageProgress,
    ImagesResponse,
    Model,
    ModelList,
    Transcription,
    TranscriptionVerbose,
)
from multai.common.v1 import model_control_pb2, model_control_pb2_grpc
from multai.openai.chat import ChatCompletion, ChatCompletionChunk
from multai.openai.completions import Completion
from multai.openai.embeddings import CreateEmbeddingResponse

ChunkT = TypeVar("ChunkT")
ResultT = TypeVar("ResultT")


class AsyncStream(Generic[ChunkT]):
    """A streamed response: iterate it for its chunks; closing it (or leaving its `with`) cancels the call."""

    def __init__(
        self,
        call: _aio.StreamCall,
        first: Any | None,
        to_chunks: Callable[[Any], list[ChunkT]],
        request_id: str,
    ) -> None:
        self._call = call
        self._first = first
        self._to_chunks = to_chunks
        self._request_id = request_id

    @classmethod
    async def open(
        cls, call: _aio.StreamCall, to_chunks: Callable[[Any], list[ChunkT]], request_id: str
    ) -> Self:
        """Waits for the first message, so that errors found before any output (unknown model, full queue)
        raise from create(), as the SDK raises them from create() when the HTTP status arrives."""
        try:
            with rpc_errors(request_id):
                first = await _aio.read(call)
        except BaseException:
            call.cancel()
            raise
        return cls(call, first, to_chunks, request_id)

    async def __aiter__(self) -> AsyncIterator[ChunkT]:
        try:
            message = self._first
            with rpc_errors(self._request_id):
                while message is not None:
                    for chunk in self._to_chunks(message):
                        yield chunk
                    message = await _aio.read(self._call)
        finally:
            self._call.cancel()

    async def close(self) -> None:
        """Stops the generation on the service."""
        self._call.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AsyncChatCompletions:
    """client.chat.completions."""

    def __init__(self, client: "AsyncMultAI") -> None:
        self._client = client

    @overload
    async def create(
        self, *, stream: Literal[True], **params: Unpack[ChatCompletionParams]
    ) -> AsyncStream[ChatCompletionChunk]: ...
    @overload
    async def create(
        self, *, stream: Literal[False] = False, **params: Unpack[ChatCompletionParams]
    ) -> ChatCompletion: ...
    async def create(
        self, *, stream: bool = False, **params: Unpack[ChatCompletionParams]
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        """A chat completion, or with stream=True its chunks as they are generated."""
        reader = protocol.ChatStreamReader(protocol.include_usage(params))
        if stream:
            return await self._client._stream(protocol.CHAT_COMPLETION, params, reader.chunks)
        return await self._client._collect(protocol.CHAT_COMPLETION, params, reader)


class AsyncChat:
    """client.chat."""

    def __init__(self, client: "AsyncMultAI") -> None:
        self.completions = AsyncChatCompletions(client)


class AsyncCompletions:
    """client.completions (legacy text completion)."""

    def __init__(self, client: "AsyncMultAI") -> None:
        self._client = client

    @overload
    async def create(
        self, *, stream: Literal[True], **params: Unpack[CompletionParams]
    ) -> AsyncStream[Completion]: ...
    @overload
    async def create(
        self, *, stream: Literal[False] = False, **params: Unpack[CompletionParams]
    ) -> Completion: ...
    async def create(
        self, *, stream: bool = False, **params: Unpack[CompletionParams]
    ) -> Completion | AsyncStream[Completion]:
        """The continuation of a prompt, or with stream=True its chunks."""
        reader = protocol.CompletionStreamReader(protocol.include_usage(params))
        if stream:
            return await self._client._stream(protocol.COMPLETION, params, reader.chunks)
        return await self._client._collect(protocol.COMPLETION, params, reader)


class AsyncEmbeddings:
    """client.embeddings."""

    def __init__(self, client: "AsyncMultAI") -> None:
        self._client = client

    async def create(self, **params: Unpack[EmbeddingParams]) -> CreateEmbeddingResponse:
        """One vector per input."""
        return await self._client._unary(protocol.EMBEDDINGS, params)


class AsyncTranscriptions:
    """client.audio.transcriptions."""

    def __init__(self, client: "AsyncMultAI") -> None:
        self._client = client

    async def create(
        self, **params: Unpack[TranscriptionParams]
    ) -> Transcription | TranscriptionVerbose | str:
        """The transcript of an audio file in its own language."""
        return await self._client._upload(protocol.TRANSCRIPTION, params)


class AsyncTranslations:
    """client.audio.translations."""

    def __init__(self, client: "AsyncMultAI") -> None:
        self._client = client

    async def create(self, **params: Unpack[TranslationParams]) -> Transcription | TranscriptionVerbose | str:
        """The English transcript of an audio file."""
        return await self._client._upload(protocol.TRANSLATION, params)


class AsyncSpeech:
    """client.audio.speech."""

    def __init__(self, client: "AsyncMultAI") -> None:
        self._client = client

    async def create(self, **params: Unpack[SpeechParams]) -> BinaryResponseContent:
        """The spoken input as an audio file (`.content`)."""
        return await self._client._collect(protocol.SPEECH, params, protocol.SpeechCollector())


class AsyncAudio:
    """client.audio."""

    def __init__(self, client: "AsyncMultAI") -> None:
        self.transcriptions = AsyncTranscriptions(client)
        self.translations = AsyncTranslations(client)
        self.speech = AsyncSpeech(client)


class AsyncImages:
    """client.images."""

    def __init__(self, client: "AsyncMultAI") -> None:
        self._client = client

    async def generate(
        self,
        *,
        on_progress: Callable[[ImageProgress], object] | None = None,
        **params: Unpack[ImageGenerateParams],
    ) -> ImagesResponse:
        """Pictures of a prompt; on_progress (a plain function) is called after each denoising step."""
        collector = protocol.ImageCollector(params, on_progress)
        return await self._client._collect(protocol.GENERATE_IMAGES, params, collector)


class AsyncModels:
    """client.models."""

    def __init__(self, client: "AsyncMultAI") -> None:
        self._client = client

    async def list(self, **options: Unpack[RequestOptions]) -> ModelList:
        """The models of every configured service that answers (asked all at once when asynchronous)."""
        calls, call = self._client._prepare_listing(options)
        request = model_control_pb2.ListModelsRequest()

        async def listing(
            stub: model_control_pb2_grpc.ModelControlServiceStub, metadata: Metadata
        ) -> model_control_pb2.ListModelsResponse | APIConnectionError:
            try:
                with rpc_errors(call.request_id):
                    listed: model_control_pb2.ListModelsResponse = await stub.ListModels(
                        request, timeout=call.timeout, metadata=metadata
                    )
                    return listed
            except APIConnectionError as exc:
                return exc

        return protocol.model_list(await _aio.gather(*(listing(stub, metadata) for stub, metadata in calls)))

    async def retrieve(self, model: str, **options: Unpack[RequestOptions]) -> Model:
        """One model by id or alias."""
        return protocol.find_model(await self.list(**options), model)


class AsyncMultAI(ClientBase[_aio.Channel]):
    """The client, with one address per service (`chat=`, `audio=`, `image=`) or one for all of them. The
    asynchronous one serves one event loop: grpc.aio channels are bound to the loop that made them."""

    @cached_property
    def chat(self) -> AsyncChat:
        """Chat completions."""
        return AsyncChat(self)

    @cached_property
    def completions(self) -> AsyncCompletions:
        """Text completions."""
        return AsyncCompletions(self)

    @cached_property
    def embeddings(self) -> AsyncEmbeddings:
        """Embeddings."""
        return AsyncEmbeddings(self)

    @cached_property
    def audio(self) -> AsyncAudio:
        """Transcriptions, translations and speech."""
        return AsyncAudio(self)

    @cached_property
    def images(self) -> AsyncImages:
        """Image generation."""
        return AsyncImages(self)

    @cached_property
    def models(self) -> AsyncModels:
        """The installed models."""
        return AsyncModels(self)

    def _open_channel(self, address: str) -> _aio.Channel:
        return _aio.open_channel(self.mesh_channels, address, self.channel_options)

    async def _unary(self, rpc: protocol.UnaryRpc[Any, ResultT], params: Mapping[str, Any]) -> ResultT:
        """A call with one response."""
        method, request, call = self._prepare(rpc, params)
        with rpc_errors(call.request_id):
            response = await method(request, timeout=call.timeout, metadata=call.metadata)
        return rpc.read(response, params)

    async def _upload(self, rpc: protocol.UnaryRpc[Any, ResultT], params: Mapping[str, Any]) -> ResultT:
        """A call that sends `file=` (read off the event loop when asynchronous)."""
        if "file" in params:
            data, name = await _aio.in_thread(protocol.read_file, params["file"], self.max_message_bytes)
            params = {**params, "file": (name, data)}
        return await self._unary(rpc, params)

    async def _collect(
        self, rpc: protocol.Rpc[Any], params: Mapping[str, Any], collector: protocol.Collector[ResultT]
    ) -> ResultT:
        """A server stream read to its end; an exception in the collector cancels the call."""
        method, request, call = self._prepare(rpc, params)
        messages = method(request, timeout=call.timeout, metadata=call.metadata)
        try:
            with rpc_errors(call.request_id):
                async for message in messages:
                    collector.add(message)
        finally:
            messages.cancel()
        return collector.result()

    async def _stream(
        self, rpc: protocol.Rpc[Any], params: Mapping[str, Any], to_chunks: Callable[[Any], list[ChunkT]]
    ) -> AsyncStream[ChunkT]:
        """A server stream handed to the caller chunk by chunk."""
        method, request, call = self._prepare(rpc, params)
        messages = method(request, timeout=call.timeout, metadata=call.metadata)
        return await AsyncStream.open(messages, to_chunks, call.request_id)

    async def close(self) -> None:
        """Closes the channels; a later call opens new ones."""
        for channel in self._forget_channels():
            await channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()
