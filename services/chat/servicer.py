"""ChatService and ModelControlService for the chat models: the only place this service touches protobuf."""

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from threading import Event
from typing import Any

import grpc
from google.protobuf.message import Message as Message_pb

from multai.chat.v1 import chat_pb2, chat_pb2_grpc
from multai.common.v1 import common_pb2
from multai.errors import InvalidRequestError
from multai.model_host import ModelHost
from multai.registry import ModelManifest
from services.chat.backends.base import (
    ChatBackend,
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationParams,
    Message,
    TextDelta,
    UnsupportedSchemaError,
)
from services.chat.backends.sentence_transformers import SentenceTransformersBackend

FINISH_TO_PB = {
    FinishReason.STOP: chat_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: chat_pb2.FINISH_REASON_LENGTH,
}
CHAT_ROLES = {"system", "developer", "user", "assistant"}


def _optional(message: Message_pb, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def params_from_pb(sampling: chat_pb2.SamplingParams, engine: chat_pb2.EngineOptions) -> GenerationParams:
    """Sampling and engine options as the backend takes them; unset fields stay None."""

    return GenerationParams(
        temperature=_optional(sampling, "temperature"),
        top_p=_optional(sampling, "top_p"),
        max_tokens=_optional(sampling, "max_tokens"),
        stop=list(sampling.stop),
        seed=_optional(sampling, "seed"),
        presence_penalty=_optional(sampling, "presence_penalty"),
        frequency_penalty=_optional(sampling, "frequency_penalty"),
        top_k=_optional(sampling, "top_k"),
        repeat_penalty=_optional(sampling, "repeat_penalty"),
        n_threads=_optional(engine, "n_threads"),
    )


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    """Streams generations from the chat models, each under a scheduler lease."""

    def __init__(self, host: ModelHost[ChatBackend]) -> None:
        self._host = host

    async def CreateChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.CreateChatCompletionResponse]:
        manifest = self._host.registry.resolve_for(request.model, {"llama_cpp"}, "chat completions")
        if not request.messages:
            raise InvalidRequestError("messages must hold at least one message", param="messages")
        for index, m in enumerate(request.messages):
            if m.role not in CHAT_ROLES:
                raise InvalidRequestError(
                    f"messages[{index}].role must be one of {sorted(CHAT_ROLES)}",
                    param=f"messages[{index}].role",
                )
        messages = [Message(m.role, m.content, m.name) for m in request.messages]
        params = replace(
            params_from_pb(request.sampling, request.engine), **_json_constraint(request.response_format)
        )
        async for event in self._generate(
            manifest,
            request.priority,
            request.request_id,
            request.engine,
            lambda backend: lambda cancel: backend.stream_chat(messages, params, cancel),
        ):
            yield chat_pb2.CreateChatCompletionResponse(model=manifest.id, **_event_fields(event))

    async def CreateCompletion(
        self, request: chat_pb2.CreateCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.CreateCompletionResponse]:
        manifest = self._host.registry.resolve_for(request.model, {"llama_cpp"}, "completions")
        params = params_from_pb(request.sampling, request.engine)
        prompt = request.prompt
        async for event in self._generate(
            manifest,
            request.priority,
            request.request_id,
            request.engine,
            lambda backend: lambda cancel: backend.stream_completion(prompt, params, cancel),
        ):
            yield chat_pb2.CreateCompletionResponse(model=manifest.id, **_event_fields(event))

    async def CreateEmbeddings(
        self, request: chat_pb2.CreateEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.CreateEmbeddingsResponse:
        manifest = self._host.registry.resolve_for(request.model, {"sentence_transformers"}, "embeddings")
        if not request.inputs:
            raise InvalidRequestError("input must not be empty", param="input")
        if any(i.WhichOneof("input") == "text" and not i.text for i in request.inputs):
            raise InvalidRequestError("input must not contain empty strings", param="input")
        async with self._host.leased(
            manifest, request.priority, request.request_id or uuid.uuid4().hex
        ) as backend:
            # Checked once the model is loaded (it knows its size) and before any input is embedded.
            native = backend.dimensions()
            if request.HasField("dimensions") and request.dimensions != native:
                raise InvalidRequestError(
                    f"'{manifest.id}' makes {native}-dimensional vectors and cannot shorten them; "
                    f"omit dimensions or set it to {native}",
                    param="dimensions",
                )
            texts = await self._host.run_blocking(_input_texts, backend, list(request.inputs))
            vectors, tokens = await self._host.run_blocking(backend.embed, texts)
        return chat_pb2.CreateEmbeddingsResponse(
            model=manifest.id,
            embeddings=[chat_pb2.Embedding(values=v.tolist()) for v in vectors],
            usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens),
        )

    async def _generate(
        self,
        manifest: ModelManifest,
        priority: common_pb2.Priority.ValueType,
        request_id: str,
        engine: chat_pb2.EngineOptions,
        producer: Callable[[ChatBackend], Callable[[Event], Iterator[GenerationEvent]]],
    ) -> AsyncIterator[GenerationEvent]:
        max_gpu_layers = engine.n_gpu_layers if engine.HasField("n_gpu_layers") else None
        async with self._host.leased(
            manifest, priority, request_id or uuid.uuid4().hex, max_gpu_layers
        ) as backend:
            try:
                async for event in self._host.stream(producer(backend)):
                    yield event
            except UnsupportedSchemaError as exc:
                raise InvalidRequestError(str(exc), param="response_format") from exc


def _json_constraint(response_format: chat_pb2.ResponseFormat) -> dict[str, Any]:
    """GenerationParams fields for a response_format."""
    if response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        return {"json_only": True}
    if response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        if not response_format.json_schema:
            raise InvalidRequestError("json_schema.schema is required", param="response_format")
        return {"json_only": True, "json_schema": response_format.json_schema}
    return {}


def _input_texts(backend: SentenceTransformersBackend, inputs: list[chat_pb2.EmbeddingInput]) -> list[str]:
    """Texts as given; token-id inputs decoded with the model's own tokenizer (as vLLM reads them)."""
    vocabulary = backend.vocabulary_size()
    texts = []
    for index, item in enumerate(inputs):
        if item.WhichOneof("input") == "tokens":
            ids = list(item.tokens.ids)
            if not ids or any(not 0 <= i < vocabulary for i in ids):
                raise InvalidRequestError(
                    f"input[{index}] must hold token ids between 0 and {vocabulary - 1}", param="input"
                )
            texts.append(backend.decode(ids))
        else:
            texts.append(item.text)
    return texts


def _event_fields(event: GenerationEvent) -> dict[str, object]:
    if isinstance(event, TextDelta):
        return {"delta": event.text}
    assert isinstance(event, Finished)
    return {
        "finish_reason": FINISH_TO_PB[event.reason],
        "usage": common_pb2.Usage(
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            total_tokens=event.prompt_tokens + event.completion_tokens,
        ),
    }
