"""ChatService and ModelControlService for the chat models: the only place this service touches protobuf."""

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import replace
from importlib.metadata import version
from typing import Any

import grpc
from google.protobuf.message import Message as Message_pb

from multai.chat.v1 import chat_pb2, chat_pb2_grpc
from multai.common.v1 import common_pb2
from multai.errors import InvalidRequestError
from multai.model_host import ModelHost
from multai.openai_params import (
    ENGINE_BOUNDS,
    MAX_CHOICES,
    MAX_LOGIT_BIAS,
    MAX_TOP_LOGPROBS,
    SAMPLING_BOUNDS,
    check_bounds,
    checked_stops,
)
from multai.registry import ModelManifest
from services.chat.backends.base import (
    ChatBackend,
    Finished,
    FinishReason,
    FunctionTool,
    GenerationEvent,
    GenerationParams,
    GenerationStream,
    InvalidParameterError,
    Message,
    TextDelta,
    TokenLogprob,
    ToolCall,
    UnsupportedSchemaError,
)
from services.chat.backends.sentence_transformers import SentenceTransformersBackend
from services.chat.schema_limits import MAX_TOOLS, SchemaBudget
from services.chat.tools import (
    CallStart,
    ContentPiece,
    ReplyParser,
    ReplyPiece,
    ToolMode,
    check_tools,
    forced_call_schema,
    reply_parser,
    resolve_tool_choice,
)

log = logging.getLogger(__name__)

FINISH_TO_PB = {
    FinishReason.STOP: chat_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: chat_pb2.FINISH_REASON_LENGTH,
}
TOOL_MODES: dict[int, ToolMode | None] = {
    chat_pb2.TOOL_CHOICE_MODE_UNSPECIFIED: None,
    chat_pb2.TOOL_CHOICE_MODE_AUTO: ToolMode.AUTO,
    chat_pb2.TOOL_CHOICE_MODE_NONE: ToolMode.NONE,
    chat_pb2.TOOL_CHOICE_MODE_REQUIRED: ToolMode.REQUIRED,
    chat_pb2.TOOL_CHOICE_MODE_FUNCTION: ToolMode.FUNCTION,
}
CHAT_ROLES = {"system", "developer", "user", "assistant", "tool"}
# GGUF models and the LoRA adapters served on them generate text.
GENERATING_BACKENDS = {"llama_cpp", "llama_cpp_lora"}
# The engine build in system_fingerprint: a new llama.cpp may change replies to the same seed.
LLAMA_ENGINE = f"llama-cpp-python {version('llama-cpp-python')}"


def _optional(message: Message_pb, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def params_from_pb(sampling: chat_pb2.SamplingParams, engine: chat_pb2.EngineOptions) -> GenerationParams:
    """Sampling and engine options as the backend takes them; unset fields stay None."""
    check_bounds(sampling, SAMPLING_BOUNDS)
    check_bounds(engine, ENGINE_BOUNDS)
    if any(abs(bias) > MAX_LOGIT_BIAS for bias in sampling.logit_bias.values()):
        raise InvalidRequestError(
            f"logit_bias values must be between -{MAX_LOGIT_BIAS:g} and {MAX_LOGIT_BIAS:g}",
            param="logit_bias",
        )
    return GenerationParams(
        temperature=_optional(sampling, "temperature"),
        top_p=_optional(sampling, "top_p"),
        max_tokens=_optional(sampling, "max_tokens"),
        stop=checked_stops(sampling.stop),
        seed=_optional(sampling, "seed"),
        presence_penalty=_optional(sampling, "presence_penalty"),
        frequency_penalty=_optional(sampling, "frequency_penalty"),
        top_k=_optional(sampling, "top_k"),
        repeat_penalty=_optional(sampling, "repeat_penalty"),
        n_threads=_optional(engine, "n_threads"),
        logit_bias=dict(sampling.logit_bias),
    )


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    """Streams generations from the chat models, each under a scheduler lease."""

    def __init__(self, host: ModelHost[ChatBackend | SentenceTransformersBackend]) -> None:
        self._host = host

    async def CreateChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.CreateChatCompletionResponse]:
        manifest = self._host.registry.resolve_for(request.model, GENERATING_BACKENDS, "chat completions")
        clock = self._host.metrics.stream_clock(manifest.id)
        messages = _messages_from_pb(request.messages)
        schemas = SchemaBudget()
        tools = _tools_from_pb(request.tools, schemas)
        choice = resolve_tool_choice(
            _tool_mode(request.tool_choice), request.tool_choice.function_name, tools
        )
        parallel = request.parallel_tool_calls if request.HasField("parallel_tool_calls") else True
        choices = _choice_count(request.n)
        params = replace(
            params_from_pb(request.sampling, request.engine), **_logprobs_fields(request.logprobs)
        )
        if choice.forced:
            # The reply is the calls, so their grammar replaces any response_format.
            schema = json.dumps(forced_call_schema(tools, choice, parallel))
            params, schema_param = replace(params, json_only=True, json_schema=schema), "tools"
        else:
            params = replace(params, **_json_constraint(request.response_format, schemas))
            schema_param = "response_format"
        if request.user:
            log.debug("chat completion %s is for user %r", request.request_id, request.user)
        # With tool_choice "none" the model is not told about tools, so it cannot try to call them.
        prompt_tools = [] if choice.mode is ToolMode.NONE else tools

        def open_choices(backend: ChatBackend) -> list[Callable[[], Awaitable[GenerationStream]]]:
            # Every choice runs in a slot of its own, side by side.
            return [
                functools.partial(backend.open_chat, messages, prompt_tools, _choice_params(params, index))
                for index in range(choices)
            ]

        replies = [_ChoiceReply(reply_parser(tools, choice, parallel)) for _ in range(choices)]
        fingerprint = manifest.system_fingerprint(LLAMA_ENGINE)
        completion_tokens = 0
        unfinished = choices
        generated = self._generate(
            manifest, request.priority, request.request_id, request.engine, open_choices
        )
        try:
            async with aclosing(generated) as events:
                async for index, event in events:
                    if isinstance(event, TextDelta):
                        fields = [replies[index].text(event)]
                    else:
                        completion_tokens += event.completion_tokens
                        fields = replies[index].finish(event)
                        unfinished -= 1
                        if not unfinished:
                            # The prompt is the same for every choice, so it counts once.
                            fields[-1]["usage"] = _usage(event.prompt_tokens, completion_tokens)
                            self._host.metrics.count_tokens(
                                manifest.id, event.prompt_tokens, completion_tokens
                            )
                    for field_values in fields:
                        if field_values:
                            clock.output()
                            yield chat_pb2.CreateChatCompletionResponse(
                                model=manifest.id,
                                choice_index=index,
                                system_fingerprint=fingerprint,
                                **field_values,
                            )
                            fingerprint = ""  # the first message carries it
        except UnsupportedSchemaError as exc:
            raise InvalidRequestError(str(exc), param=schema_param) from exc

    async def CreateCompletion(
        self, request: chat_pb2.CreateCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.CreateCompletionResponse]:
        manifest = self._host.registry.resolve_for(request.model, GENERATING_BACKENDS, "completions")
        clock = self._host.metrics.stream_clock(manifest.id)
        params = params_from_pb(request.sampling, request.engine)
        prompt = request.prompt

        def open_one(backend: ChatBackend) -> list[Callable[[], Awaitable[GenerationStream]]]:
            return [functools.partial(backend.open_completion, prompt, params)]

        generated = self._generate(manifest, request.priority, request.request_id, request.engine, open_one)
        fingerprint = manifest.system_fingerprint(LLAMA_ENGINE)
        async with aclosing(generated) as events:
            async for _, event in events:
                clock.output()
                if isinstance(event, TextDelta):
                    yield chat_pb2.CreateCompletionResponse(
                        model=manifest.id, delta=event.text, system_fingerprint=fingerprint
                    )
                else:
                    self._host.metrics.count_tokens(manifest.id, event.prompt_tokens, event.completion_tokens)
                    yield chat_pb2.CreateCompletionResponse(
                        model=manifest.id,
                        finish_reason=FINISH_TO_PB[event.reason],
                        usage=_usage(event.prompt_tokens, event.completion_tokens),
                        system_fingerprint=fingerprint,
                    )
                fingerprint = ""  # the first message carries it

    async def CreateEmbeddings(
        self, request: chat_pb2.CreateEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.CreateEmbeddingsResponse:
        manifest = self._host.registry.resolve_for(request.model, {"sentence_transformers"}, "embeddings")
        if not request.inputs:
            raise InvalidRequestError("input must not be empty", param="input")
        if any(i.WhichOneof("input") == "text" and not i.text for i in request.inputs):
            raise InvalidRequestError("input must not contain empty strings", param="input")
        async with self._host.leased(manifest, request.priority, request.request_id) as leased:
            backend = _embedder(leased)
            # Checked once the model is loaded (it knows its size) and before any input is embedded.
            native = backend.dimensions()
            dimensions = request.dimensions if request.HasField("dimensions") else native
            if not 1 <= dimensions <= native:
                raise InvalidRequestError(
                    f"'{manifest.id}' makes {native}-dimensional vectors; dimensions must be 1 to {native}",
                    param="dimensions",
                )
            texts = await self._host.run_blocking(_input_texts, backend, list(request.inputs))
            vectors, tokens = await self._host.run_blocking(backend.embed, texts, dimensions)
        self._host.metrics.count_tokens(manifest.id, tokens, 0)
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
        openers: Callable[[ChatBackend], list[Callable[[], Awaitable[GenerationStream]]]],
    ) -> AsyncGenerator[tuple[int, GenerationEvent], None]:
        """The events of each stream, tagged with its index, under one lease; the streams end before it does.

        Text that arrived while the reader was busy comes as one event, so a lagging reader sends several
        tokens in one message; the first token is never held back.
        """
        max_gpu_layers = engine.n_gpu_layers if engine.HasField("n_gpu_layers") else None
        async with (
            self._host.leased(manifest, priority, request_id, max_gpu_layers) as backend,
            contextlib.AsyncExitStack() as streams_open,
        ):
            try:
                streams = []
                for open_stream in openers(_generator(backend)):
                    # Closed on the way out, however it ends: no sequence outlives the lease.
                    stream = await open_stream()
                    streams_open.push_async_callback(stream.aclose)
                    streams.append(stream)
                async with aclosing(_arrivals(streams)) as arrivals:
                    async for index, events in arrivals:
                        for event in _coalesced(events):
                            yield index, event
            except InvalidParameterError as exc:
                raise InvalidRequestError(str(exc), param=exc.param) from exc


async def _arrivals(
    streams: list[GenerationStream],
) -> AsyncGenerator[tuple[int, list[GenerationEvent]], None]:
    """What each stream delivers, as it arrives, until all have finished."""
    if len(streams) == 1:
        while events := await streams[0].next_events():
            yield 0, events
        return
    reads = {asyncio.ensure_future(stream.next_events()): index for index, stream in enumerate(streams)}
    try:
        while reads:
            done, _ = await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
            for read in done:
                index = reads.pop(read)
                events = read.result()
                if events:
                    reads[asyncio.ensure_future(streams[index].next_events())] = index
                    yield index, events
    finally:
        for read in reads:
            read.cancel()


def _coalesced(events: list[GenerationEvent]) -> list[GenerationEvent]:
    """Consecutive text deltas merged into one."""
    merged: list[GenerationEvent] = []
    for event in events:
        previous = merged[-1] if merged else None
        if isinstance(event, TextDelta) and isinstance(previous, TextDelta):
            merged[-1] = TextDelta(previous.text + event.text, previous.logprobs + event.logprobs)
        else:
            merged.append(event)
    return merged


def _messages_from_pb(messages: Sequence[chat_pb2.ChatMessage]) -> list[Message]:
    """The conversation; a tool result must answer a call of an earlier assistant message."""
    if not messages:
        raise InvalidRequestError("messages must hold at least one message", param="messages")
    call_ids: set[str] = set()
    result = []
    for index, m in enumerate(messages):
        if m.role not in CHAT_ROLES:
            raise InvalidRequestError(
                f"messages[{index}].role must be one of {sorted(CHAT_ROLES)}", param=f"messages[{index}].role"
            )
        if m.tool_calls and m.role != "assistant":
            raise InvalidRequestError(
                "only assistant messages carry tool_calls", param=f"messages[{index}].tool_calls"
            )
        if m.role == "tool" and m.tool_call_id not in call_ids:
            raise InvalidRequestError(
                f"messages[{index}] answers the call '{m.tool_call_id}', which no earlier assistant "
                "message made; set tool_call_id to the id of that call",
                param=f"messages[{index}].tool_call_id",
            )
        calls = tuple(ToolCall(c.id, c.name, c.arguments) for c in m.tool_calls)
        call_ids.update(c.id for c in calls)
        result.append(Message(m.role, m.content, m.name, calls, m.tool_call_id))
    return result


def _tools_from_pb(tools: Sequence[chat_pb2.FunctionTool], schemas: SchemaBudget) -> list[FunctionTool]:
    """The declared functions, their parameters parsed and checked."""
    if len(tools) > MAX_TOOLS:
        raise InvalidRequestError(f"tools holds more than {MAX_TOOLS} functions", param="tools")
    result = []
    for index, tool in enumerate(tools):
        parameters = None
        if tool.parameters_json:
            param = f"tools[{index}].function.parameters"
            parameters = schemas.parse(tool.parameters_json, param)
            if not isinstance(parameters, dict):
                raise InvalidRequestError("parameters must be a JSON Schema object", param=param)
        result.append(FunctionTool(tool.name, tool.description, parameters))
    check_tools(result)
    return result


def _tool_mode(tool_choice: chat_pb2.ToolChoice) -> ToolMode | None:
    if tool_choice.mode not in TOOL_MODES:
        raise InvalidRequestError(f"tool_choice mode {tool_choice.mode} is unknown", param="tool_choice")
    return TOOL_MODES[tool_choice.mode]


def _choice_count(n: int) -> int:
    """How many choices to generate; 0 is protobuf's unset and means 1."""
    if not 0 <= n <= MAX_CHOICES:
        raise InvalidRequestError(f"n must be between 1 and {MAX_CHOICES}", param="n")
    return max(n, 1)


def _choice_params(params: GenerationParams, index: int) -> GenerationParams:
    """Each choice draws with its own seed, so that choices differ while the whole response repeats."""
    return params if params.seed is None else replace(params, seed=params.seed + index)


def _logprobs_fields(options: chat_pb2.LogprobsOptions) -> dict[str, Any]:
    """GenerationParams fields for the logprobs options."""
    if not 0 <= options.top_logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidRequestError(
            f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}", param="top_logprobs"
        )
    if options.top_logprobs and not options.enabled:
        raise InvalidRequestError("top_logprobs needs logprobs set to true", param="top_logprobs")
    return {"logprobs": options.enabled, "top_logprobs": options.top_logprobs}


class _ChoiceReply:
    """One choice's events as response fields: text split into content and tool-call pieces by the parser."""

    def __init__(self, parser: ReplyParser | None) -> None:
        self._parser = parser

    def text(self, event: TextDelta) -> dict[str, Any]:
        """The fields of a text event; empty while the parser holds the text back and no logprobs came."""
        pieces: list[ReplyPiece] = (
            [ContentPiece(event.text)] if self._parser is None else self._parser.feed(event.text)
        )
        return _piece_fields(pieces, event.logprobs)

    def finish(self, event: Finished) -> list[dict[str, Any]]:
        """What the parser still held, then the final fields of the choice."""
        held = _piece_fields(self._parser.close(), ()) if self._parser is not None else {}
        reason = FINISH_TO_PB[event.reason]
        # A cut-off call stays "length", as its arguments may be incomplete.
        if self._parser is not None and self._parser.calls and event.reason is FinishReason.STOP:
            reason = chat_pb2.FINISH_REASON_TOOL_CALLS
        return [held, {"finish_reason": reason}]


def _piece_fields(pieces: list[ReplyPiece], logprobs: Sequence[TokenLogprob]) -> dict[str, Any]:
    """Response fields for parsed pieces; consecutive pieces of one call merge into one ToolCallDelta."""
    content = []
    calls: list[chat_pb2.ToolCallDelta] = []
    for piece in pieces:
        if isinstance(piece, ContentPiece):
            content.append(piece.text)
        elif isinstance(piece, CallStart):
            calls.append(chat_pb2.ToolCallDelta(index=piece.index, id=piece.call_id, name=piece.name))
        elif calls and calls[-1].index == piece.index:
            calls[-1].arguments += piece.text
        else:
            calls.append(chat_pb2.ToolCallDelta(index=piece.index, arguments=piece.text))
    fields: dict[str, Any] = {}
    if content:
        fields["delta"] = "".join(content)
    if calls:
        fields["tool_calls"] = calls
    if logprobs:
        fields["logprobs"] = [_logprob_to_pb(t) for t in logprobs]
    return fields


def _logprob_to_pb(logprob: TokenLogprob) -> chat_pb2.TokenLogprob:
    return chat_pb2.TokenLogprob(
        token=logprob.token,
        logprob=logprob.logprob,
        bytes=logprob.token_bytes,
        top_logprobs=[
            chat_pb2.TopLogprob(token=t.token, logprob=t.logprob, bytes=t.token_bytes)
            for t in logprob.top_logprobs
        ],
    )


def _json_constraint(response_format: chat_pb2.ResponseFormat, schemas: SchemaBudget) -> dict[str, Any]:
    """GenerationParams fields for a response_format."""
    if response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        return {"json_only": True}
    if response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        if not response_format.json_schema:
            raise InvalidRequestError("json_schema.schema is required", param="response_format")
        schemas.parse(response_format.json_schema, "response_format")
        return {"json_only": True, "json_schema": response_format.json_schema}
    return {}


def _embedder(backend: ChatBackend | SentenceTransformersBackend) -> SentenceTransformersBackend:
    # The registry resolved the request to an embedding model, so its backend embeds.
    if not isinstance(backend, SentenceTransformersBackend):
        raise TypeError(f"{type(backend).__name__} does not embed")
    return backend


def _generator(backend: ChatBackend | SentenceTransformersBackend) -> ChatBackend:
    # The registry resolved the request to a GGUF model, so its backend generates.
    if isinstance(backend, SentenceTransformersBackend):
        raise TypeError("an embedding model does not generate text")
    return backend


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


def _usage(prompt_tokens: int, completion_tokens: int) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
