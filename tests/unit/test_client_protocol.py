"""multai.client: request building, response reading, error mapping, and both clients against a fake service.

The fake ChatService runs in-process on a grpc.aio server behind the real DomainErrorInterceptor and the
mesh's mutual TLS, in a thread of its own so that the blocking client can call it from plain tests.
"""

import asyncio
import base64
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from multai.audio.v1 import audio_pb2
from multai.chat.v1 import chat_pb2, chat_pb2_grpc
from multai.client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncMultAI,
    BadRequestError,
    InternalServerError,
    MultAI,
    NotFoundError,
    RateLimitError,
    protocol,
)
from multai.client.errors import from_rpc_error
from multai.common.v1 import common_pb2, model_control_pb2, model_control_pb2_grpc
from multai.errors import ModelNotFoundError, ResourceExhaustedError
from multai.grpc_server import DomainErrorInterceptor
from multai.image.v1 import image_pb2
from multai.mesh_tls import create_mesh_certs, server_credentials
from multai.openai.chat import ChatCompletionMessage, ChatCompletionMessageToolCall, FunctionCall
from multai.openai_params import DEFAULT_IMAGE_MODEL
from rest_bridge.errors import from_rpc_error as bridge_error

QUESTION = [{"role": "user", "content": "hello brave new world"}]


def settings(**overrides: Any) -> protocol.CallSettings:
    return protocol.call_settings(overrides, 30.0, "normal", 4 * 1024 * 1024)


# --- arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("urgent", common_pb2.PRIORITY_URGENT),
        (0, common_pb2.PRIORITY_URGENT),
        ("normal", common_pb2.PRIORITY_NORMAL),
        (1, common_pb2.PRIORITY_NORMAL),
        ("background", common_pb2.PRIORITY_BACKGROUND),
        (2, common_pb2.PRIORITY_BACKGROUND),
    ],
)
def test_priority_names_and_levels(value: Any, expected: int) -> None:
    assert protocol.priority_to_pb(value) == expected


@pytest.mark.parametrize("value", [3, -1, True, "high", "URGENT", None, 1.0])
def test_other_priorities_are_refused(value: Any) -> None:
    with pytest.raises(BadRequestError) as caught:
        protocol.priority_to_pb(value)
    assert caught.value.param == "priority" and caught.value.status_code == 400


def test_call_settings_take_the_call_s_own_values_over_the_client_s() -> None:
    default = protocol.call_settings({}, 30.0, "background", 1024)
    assert (default.timeout, default.priority) == (30.0, common_pb2.PRIORITY_BACKGROUND)
    own = protocol.call_settings({"timeout": 2.5, "priority": 0}, 30.0, "background", 1024)
    assert (own.timeout, own.priority) == (2.5, common_pb2.PRIORITY_URGENT)
    assert own.request_id != default.request_id and own.metadata == (("x-request-id", own.request_id),)
    with pytest.raises(BadRequestError) as caught:
        protocol.call_settings({"timeout": 0}, 30.0, "normal", 1024)
    assert caught.value.param == "timeout"


def test_unknown_and_missing_keyword_arguments_are_type_errors() -> None:
    client = MultAI("127.0.0.1:1")
    with pytest.raises(TypeError, match="unexpected keyword argument 'temprature'"):
        client.chat.completions.create(model="m", messages=QUESTION, temprature=0)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="messages"):
        client.chat.completions.create(model="m")  # type: ignore[call-overload]


def test_client_needs_an_address_and_uses_the_target_for_services_without_their_own() -> None:
    with pytest.raises(ValueError, match="target"):
        MultAI()
    client = MultAI("edge:443", audio="audio:1")
    assert [client._address(s) for s in ("chat", "audio", "image")] == ["edge:443", "audio:1", "edge:443"]
    only_chat = MultAI(chat="chat:1")
    with pytest.raises(ValueError, match="image"):
        only_chat._address("image")


# --- chat and completions -------------------------------------------------------------------------


def test_chat_request_carries_every_argument() -> None:
    call = settings(priority="urgent")
    request = protocol.chat_request(
        {
            "model": "smollm",
            "messages": [
                {
                    "role": "system",
                    "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
                },
                ChatCompletionMessage(
                    content=None,
                    tool_calls=[
                        ChatCompletionMessageToolCall(
                            id="call_1", function=FunctionCall(name="weather", arguments='{"city": "Paris"}')
                        )
                    ],
                ),
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
            "temperature": 0.5,
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "stop": "END",
            "logit_bias": {"42": -100},
            "n": 2,
            "logprobs": True,
            "top_logprobs": 3,
            "tools": [
                {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
            ],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "parallel_tool_calls": False,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            },
            "n_threads": 2,
        },
        call,
    )
    assert request.priority == common_pb2.PRIORITY_URGENT and request.request_id == call.request_id
    system, assistant, tool = request.messages
    assert system.content == "Be brief."
    assert (assistant.role, assistant.content) == ("assistant", "")
    assert assistant.tool_calls[0] == chat_pb2.ToolCall(
        id="call_1", name="weather", arguments='{"city": "Paris"}'
    )
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "call_1", "sunny")
    # max_completion_tokens wins over the deprecated max_tokens, as in OpenAI's API.
    assert request.sampling.max_tokens == 20 and list(request.sampling.stop) == ["END"]
    assert dict(request.sampling.logit_bias) == {42: -100.0}
    assert request.n == 2 and request.logprobs == chat_pb2.LogprobsOptions(enabled=True, top_logprobs=3)
    assert request.tools[0].parameters_json == '{"type": "object"}'
    assert request.tool_choice == chat_pb2.ToolChoice(
        mode=chat_pb2.TOOL_CHOICE_MODE_FUNCTION, function_name="weather"
    )
    assert request.HasField("parallel_tool_calls") and not request.parallel_tool_calls
    assert request.response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    assert request.response_format.json_schema == '{"type": "object"}'
    assert request.engine.n_threads == 2 and not request.engine.HasField("n_gpu_layers")


def test_chat_request_leaves_what_was_not_given_unset() -> None:
    request = protocol.chat_request({"model": "m", "messages": QUESTION}, settings())
    assert not request.HasField("parallel_tool_calls")
    assert request.response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_TEXT
    assert request.tool_choice.mode == chat_pb2.TOOL_CHOICE_MODE_UNSPECIFIED
    assert not request.logprobs.enabled
    for name in ("temperature", "top_p", "max_tokens", "seed", "top_k"):
        assert not request.sampling.HasField(name), name
    assert request.n == 1 and request.priority == common_pb2.PRIORITY_NORMAL


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"content": "no role"}]}, "messages.0.role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages.0.content",
        ),
        ({"logit_bias": {"token": 1.0}}, "logit_bias.token"),
        ({"n": 0}, "n"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools.0.function.name"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema.schema",
        ),
    ],
)
def test_bad_chat_arguments_are_refused_before_sending_as_the_rest_bridge_refuses_them(
    changes: dict[str, Any], param: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        protocol.chat_request({"model": "m", "messages": QUESTION, **changes}, settings())  # type: ignore[typeddict-item]
    assert caught.value.param == param


def test_completion_request_takes_one_prompt_and_one_choice() -> None:
    request = protocol.completion_request(
        {"model": "m", "prompt": ["Once upon"], "max_tokens": 5}, settings()
    )
    assert (request.prompt, request.sampling.max_tokens) == ("Once upon", 5)
    with pytest.raises(BadRequestError, match="one prompt") as prompts:
        protocol.completion_request({"model": "m", "prompt": ["a", "b"]}, settings())
    assert prompts.value.param == "prompt"
    with pytest.raises(BadRequestError) as choices:
        protocol.completion_request({"model": "m", "prompt": "a", "n": 2}, settings())
    assert choices.value.param == "n"


def chat_message(**fields: Any) -> chat_pb2.CreateChatCompletionResponse:
    return chat_pb2.CreateChatCompletionResponse(model="smollm", **fields)


def test_chat_stream_becomes_openai_chunks_and_one_completion() -> None:
    stream = [
        chat_message(delta="Hel", choice_index=0),
        chat_message(
            choice_index=1,
            tool_calls=[chat_pb2.ToolCallDelta(index=0, id="call_1", name="weather", arguments='{"ci')],
        ),
        chat_message(delta="lo", choice_index=0, logprobs=[chat_pb2.TokenLogprob(token="lo", logprob=-0.5)]),
        chat_message(choice_index=1, tool_calls=[chat_pb2.ToolCallDelta(index=0, arguments='ty": "Paris"}')]),
        chat_message(choice_index=0, finish_reason=chat_pb2.FINISH_REASON_STOP),
        chat_message(
            choice_index=1,
            finish_reason=chat_pb2.FINISH_REASON_TOOL_CALLS,
            usage=common_pb2.Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12),
        ),
    ]
    reader = protocol.ChatStreamReader(include_usage=True)
    chunks = [chunk for message in stream for chunk in reader.chunks(message)]
    # As the REST bridge streams: each choice opens with a role chunk and ends with an empty delta.
    assert len(chunks) == len(stream) + 3
    assert len({chunk.id for chunk in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    opening, text = chunks[0].choices[0], chunks[1].choices[0]
    assert (opening.delta.role, opening.delta.content, text.delta.role, text.delta.content) == (
        "assistant",
        "",
        None,
        "Hel",
    )
    tool_start = chunks[3].choices[0]
    assert tool_start.index == 1 and tool_start.delta.tool_calls[0].type == "function"
    assert tool_start.delta.tool_calls[0].id == "call_1"
    assert chunks[4].choices[0].logprobs.content[0].logprob == -0.5
    assert [c.choices[0].finish_reason for c in chunks[6:8]] == ["stop", "tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 12

    whole = reader.result()
    assert whole.choices[0].message.content == "Hello" and whole.choices[0].finish_reason == "stop"
    assert whole.choices[0].logprobs.content[0].token == "lo"
    called = whole.choices[1].message
    assert called.content is None
    assert called.tool_calls[0].function == FunctionCall(name="weather", arguments='{"city": "Paris"}')
    assert whole.usage.prompt_tokens == 5 and whole.model == "smollm"


def test_a_stream_that_ends_before_its_choice_finishes_is_a_server_error() -> None:
    reader = protocol.ChatStreamReader()
    reader.add(chat_message(delta="cut"))
    with pytest.raises(InternalServerError):
        reader.result()


# --- embeddings, audio, images, models ------------------------------------------------------------


def test_embeddings_accept_openai_s_four_input_shapes() -> None:
    def inputs(value: Any) -> list[chat_pb2.EmbeddingInput]:
        return list(protocol.embeddings_request({"model": "e", "input": value}, settings()).inputs)

    assert [i.text for i in inputs("one")] == ["one"]
    assert [i.text for i in inputs(["a", "b"])] == ["a", "b"]
    assert [list(i.tokens.ids) for i in inputs([1, 2, 3])] == [[1, 2, 3]]
    assert [list(i.tokens.ids) for i in inputs([[1], [2, 3]])] == [[1], [2, 3]]
    # OpenAI's limit counts inputs, not the tokens of one token array.
    assert [len(i.tokens.ids) for i in inputs(list(range(3000)))] == [3000]
    for bad in ([], [[]], [1.5], ["x"] * 2049):
        with pytest.raises(BadRequestError) as caught:
            inputs(bad)
        assert caught.value.param == "input"


def test_base64_embeddings_are_little_endian_float32() -> None:
    response = chat_pb2.CreateEmbeddingsResponse(
        model="e",
        embeddings=[chat_pb2.Embedding(values=[0.5, -1.0])],
        usage=common_pb2.Usage(prompt_tokens=2, total_tokens=2),
    )
    encoded = protocol.embeddings_response(
        response, {"model": "e", "input": "x", "encoding_format": "base64"}
    )
    assert struct.unpack("<2f", base64.b64decode(encoded.data[0].embedding)) == (0.5, -1.0)
    plain = protocol.embeddings_response(response, {"model": "e", "input": "x"})
    assert plain.data[0].embedding == [0.5, -1.0] and plain.usage.prompt_tokens == 2


def test_files_are_read_from_bytes_paths_and_open_files(tmp_path: Any) -> None:
    path = tmp_path / "talk.wav"
    path.write_bytes(b"RIFF")
    assert protocol.read_file(b"RIFF", 1024 * 1024) == (b"RIFF", "upload")
    assert protocol.read_file(path, 1024 * 1024) == (b"RIFF", "talk.wav")
    assert protocol.read_file(("a.mp3", b"ID3"), 1024 * 1024) == (b"ID3", "a.mp3")
    with path.open("rb") as opened:
        assert protocol.read_file(opened, 1024 * 1024) == (b"RIFF", "talk.wav")
    with pytest.raises(BadRequestError, match="empty"):
        protocol.read_file(b"", 1024 * 1024)
    with pytest.raises(BadRequestError) as too_large:
        protocol.read_file(b"\0" * (1024 * 1024), 1024 * 1024)
    assert too_large.value.code == "file_too_large"


def test_transcription_request_and_its_three_formats() -> None:
    params: Any = {
        "model": "whisper-1",
        "file": ("a.wav", b"RIFF"),
        "response_format": "verbose_json",
        "timestamp_granularities": ["word"],
        "language": "en",
        "priority": "background",
    }
    request = protocol.transcription_request(params, settings(priority="background"))
    assert request.word_timestamps and request.filename == "a.wav" and request.language == "en"
    assert request.priority == common_pb2.PRIORITY_BACKGROUND
    response = audio_pb2.CreateTranscriptionResponse(
        transcript=audio_pb2.Transcript(
            text=" Hi there.",
            language="english",
            duration=1.5,
            segments=[audio_pb2.Segment(id=0, start=0.0, end=1.5, text=" Hi there.")],
            words=[audio_pb2.Word(word=" Hi", start=0.0, end=0.4)],
        )
    )
    verbose = protocol.transcript_result(response, params)
    assert verbose.words[0].word == " Hi" and verbose.segments is None and verbose.duration == 1.5
    assert protocol.transcript_result(response, {**params, "response_format": "text"}) == " Hi there."
    assert protocol.transcript_result(response, {"model": "w", "file": b"x"}).text == " Hi there."
    translation = protocol.translation_request(
        {"model": "whisper-1", "file": b"RIFF", "prompt": "Names.", "temperature": 0.2}, settings()
    )
    assert (translation.prompt, translation.filename, translation.audio) == ("Names.", "upload", b"RIFF")
    assert translation.temperature == pytest.approx(0.2)
    with pytest.raises(BadRequestError):
        protocol.transcription_request({**params, "response_format": "json"}, settings())
    with pytest.raises(BadRequestError):
        protocol.transcription_request({**params, "response_format": "srt"}, settings())


def test_speech_defaults() -> None:
    request = protocol.speech_request({"model": "tts-1", "voice": "alloy", "input": "Hi"}, settings())
    assert (request.response_format, request.speed) == ("mp3", 1.0)
    collector = protocol.SpeechCollector()
    collector.add(audio_pb2.CreateSpeechResponse(audio=b"RI", content_type="audio/wav"))
    collector.add(audio_pb2.CreateSpeechResponse(audio=b"FF"))
    assert collector.result().content == b"RIFF" and collector.result().content_type == "audio/wav"


@pytest.mark.parametrize(("size", "expected"), [(None, (0, 0)), ("auto", (0, 0)), ("256x128", (256, 128))])
def test_image_sizes(size: str | None, expected: tuple[int, int]) -> None:
    request = protocol.image_request({"prompt": "a cat", "size": size}, settings())
    assert (request.width, request.height) == expected and request.model == DEFAULT_IMAGE_MODEL


@pytest.mark.parametrize("size", ["256", "axb", "256x", "-1x5"])
def test_malformed_image_sizes_are_refused(size: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        protocol.image_request({"prompt": "a cat", "size": size}, settings())
    assert caught.value.param == "size"


def test_image_stream_reports_progress_and_keeps_pictures_in_request_order() -> None:
    progress: list[tuple[int, int]] = []
    collector = protocol.ImageCollector(
        {"prompt": "a cat", "response_format": "url", "n": 2},
        lambda p: progress.append((p.step, p.total_steps)),
    )
    for step in (1, 2):
        collector.add(
            image_pb2.GenerateImagesResponse(progress=image_pb2.StepProgress(step=step, total_steps=2))
        )
    for index in (1, 0):
        picture = image_pb2.GeneratedImage(
            index=index, png=bytes([index]), seed=7 + index, width=64, height=32
        )
        collector.add(image_pb2.GenerateImagesResponse(image=picture))
    response = collector.result()
    assert progress == [(1, 2), (2, 2)]
    assert response.seed == 7 and response.size is None
    assert [image.url for image in response.data] == [
        "data:image/png;base64," + base64.b64encode(bytes([index])).decode() for index in (0, 1)
    ]
    assert response.data[0].b64_json is None
    # A stream that ends short of n pictures is an error, not a shorter answer.
    short = protocol.ImageCollector({"prompt": "x", "n": 2})
    short.add(image_pb2.GenerateImagesResponse(image=picture))
    with pytest.raises(InternalServerError):
        short.result()


def listing(*ids: str) -> model_control_pb2.ListModelsResponse:
    return model_control_pb2.ListModelsResponse(
        models=[common_pb2.ModelInfo(id=i, aliases=[f"{i}-alias"], modality="chat") for i in ids]
    )


def test_model_listings_merge_and_a_down_service_hides_nothing() -> None:
    down = APIConnectionError("no route")
    models = protocol.model_list([listing("b", "a"), down, listing("a")])
    assert [m.id for m in models] == ["a", "b"]
    assert protocol.find_model(models, "b-alias").id == "b"
    with pytest.raises(NotFoundError):
        protocol.find_model(models, "c")
    with pytest.raises(APIConnectionError):
        protocol.model_list([down, down])


# --- error mapping --------------------------------------------------------------------------------


def failed_call(status: grpc.StatusCode, **metadata: str) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata(*((f"multai-error-{key}", value) for key, value in metadata.items()))
    return grpc.aio.AioRpcError(status, grpc.aio.Metadata(), trailing, details="it failed")


@pytest.mark.parametrize(
    "status", [s for s in grpc.StatusCode if s not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED)]
)
def test_client_errors_carry_the_http_status_the_rest_bridge_answers(status: grpc.StatusCode) -> None:
    # Services attach an error code to what they abort with; the client and the bridge read one table.
    failure = failed_call(status, code="some_code", param="model")
    client_error = from_rpc_error(failure, "req_1")
    bridge = bridge_error(failure)
    assert isinstance(client_error, APIStatusError)
    assert (client_error.status_code, client_error.type) == (bridge.status, bridge.type)
    assert (client_error.code, client_error.param, client_error.request_id) == ("some_code", "model", "req_1")


@pytest.mark.parametrize(
    ("status", "error_class", "status_code"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, BadRequestError, 400),
        (grpc.StatusCode.NOT_FOUND, NotFoundError, 404),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, RateLimitError, 429),
        (grpc.StatusCode.INTERNAL, InternalServerError, 500),
        (grpc.StatusCode.UNAVAILABLE, InternalServerError, 503),
        (grpc.StatusCode.CANCELLED, APIStatusError, 499),
    ],
)
def test_statuses_raise_the_sdk_s_classes(
    status: grpc.StatusCode, error_class: type[APIStatusError], status_code: int
) -> None:
    error = from_rpc_error(failed_call(status, code="x"))
    assert type(error) is error_class and error.status_code == status_code


def test_deadlines_and_unreachable_services_are_connection_errors() -> None:
    timed_out = from_rpc_error(failed_call(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert isinstance(timed_out, APITimeoutError) and timed_out.type == "timeout"
    unreachable = from_rpc_error(failed_call(grpc.StatusCode.UNAVAILABLE))
    assert type(unreachable) is APIConnectionError


# --- both clients against an in-process service ---------------------------------------------------


@dataclass
class FakeChatService(chat_pb2_grpc.ChatServiceServicer, model_control_pb2_grpc.ModelControlServiceServicer):
    """Echoes the last message word by word; the model name picks a failure or a slow or endless reply."""

    requests: list[Any] = field(default_factory=list)
    deadlines: list[float] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def _note(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.requests.append(request)
        self.deadlines.append(context.time_remaining())
        self.request_ids.append(dict(context.invocation_metadata())["x-request-id"])
        if request.model == "missing":
            raise ModelNotFoundError(request.model)
        if request.model == "busy":
            raise ResourceExhaustedError("the queue is full")

    async def CreateChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.CreateChatCompletionResponse]:
        self._note(request, context)
        if request.model == "slow":
            await asyncio.sleep(5)
        words = request.messages[-1].content.split()
        try:
            for index, word in enumerate(words * (1000 if request.model == "endless" else 1)):
                yield chat_pb2.CreateChatCompletionResponse(
                    model=request.model, delta=f"{' ' * bool(index)}{word}"
                )
                await asyncio.sleep(0.01 if request.model == "endless" else 0)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        yield chat_pb2.CreateChatCompletionResponse(
            model=request.model,
            finish_reason=chat_pb2.FINISH_REASON_STOP,
            usage=common_pb2.Usage(
                prompt_tokens=3, completion_tokens=len(words), total_tokens=3 + len(words)
            ),
        )

    async def CreateEmbeddings(
        self, request: chat_pb2.CreateEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.CreateEmbeddingsResponse:
        self._note(request, context)
        return chat_pb2.CreateEmbeddingsResponse(
            model=request.model,
            embeddings=[chat_pb2.Embedding(values=[float(len(i.text)), 1.0]) for i in request.inputs],
            usage=common_pb2.Usage(prompt_tokens=len(request.inputs), total_tokens=len(request.inputs)),
        )

    async def ListModels(
        self, request: model_control_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> model_control_pb2.ListModelsResponse:
        return listing("echo")


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    create_mesh_certs(folder)
    return folder


@pytest.fixture(scope="module")
def service(certs_dir: Path) -> Iterator[tuple[FakeChatService, str]]:
    fake = FakeChatService()
    # grpc.aio binds a server to the loop it starts on: give it a loop of its own in a thread.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(interceptors=[DomainErrorInterceptor()])
        chat_pb2_grpc.add_ChatServiceServicer_to_server(fake, server)
        model_control_pb2_grpc.add_ModelControlServiceServicer_to_server(fake, server)
        port = server.add_secure_port("127.0.0.1:0", server_credentials(certs_dir))
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result()
    yield fake, f"127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(server.stop(None), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def test_sync_stream_sends_priority_deadline_and_request_id(
    service: tuple[FakeChatService, str], certs_dir: Path
) -> None:
    fake, address = service
    with MultAI(chat=address, certs_dir=certs_dir) as client:
        stream = client.chat.completions.create(
            model="echo",
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
            priority="urgent",
            timeout=7,
        )
        chunks = list(stream)
    request = fake.requests[-1]
    assert request.priority == common_pb2.PRIORITY_URGENT
    assert fake.request_ids[-1] == request.request_id
    # gRPC sends the deadline as a rounded timeout, so the service may see a few ms more than 7 s.
    assert 5 < fake.deadlines[-1] <= 7.1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "hello brave new world"
    assert chunks[-1].usage.completion_tokens == 4


def test_sync_client_errors(service: tuple[FakeChatService, str], certs_dir: Path) -> None:
    _, address = service
    with MultAI(chat=address, certs_dir=certs_dir) as client:
        with pytest.raises(NotFoundError) as missing:
            # Errors before the first chunk raise from create(), as in the SDK.
            client.chat.completions.create(model="missing", messages=QUESTION, stream=True)
        assert (missing.value.code, missing.value.param) == ("model_not_found", "model")
        assert missing.value.request_id and missing.value.request_id.startswith("req_")
        with pytest.raises(RateLimitError):
            client.embeddings.create(model="busy", input="x")
        with pytest.raises(APITimeoutError):
            client.chat.completions.create(model="slow", messages=QUESTION, timeout=0.2)
    with pytest.raises(APIConnectionError), MultAI(chat="127.0.0.1:1", certs_dir=certs_dir) as nowhere:
        nowhere.embeddings.create(model="e", input="x", timeout=5)


def test_a_client_without_a_certificate_of_the_mesh_is_refused(
    service: tuple[FakeChatService, str], certs_dir: Path, tmp_path: Path
) -> None:
    _, address = service
    create_mesh_certs(tmp_path)
    for client in (MultAI(chat=address, tls=False), MultAI(chat=address, certs_dir=tmp_path)):
        with pytest.raises(APIConnectionError), client:
            client.embeddings.create(model="e", input="x", timeout=5)
    with (
        pytest.raises(FileNotFoundError, match="multai certs client"),
        MultAI(chat=address, certs_dir=certs_dir, client_cert="nobody") as nobody,
    ):
        nobody.embeddings.create(model="e", input="x", timeout=5)


def test_closing_a_stream_cancels_the_generation(
    service: tuple[FakeChatService, str], certs_dir: Path
) -> None:
    fake, address = service
    fake.cancelled.clear()
    with MultAI(chat=address, certs_dir=certs_dir) as client:
        with client.chat.completions.create(model="endless", messages=QUESTION, stream=True) as stream:
            for index, _ in enumerate(stream):
                if index == 2:
                    break
        assert fake.cancelled.wait(5)


def test_models_of_the_services_that_answer(service: tuple[FakeChatService, str], certs_dir: Path) -> None:
    _, address = service
    with MultAI(chat=address, audio="127.0.0.1:1", certs_dir=certs_dir) as client:
        assert [m.id for m in client.models.list(timeout=5)] == ["echo"]
        assert client.models.retrieve("echo-alias").id == "echo"


async def test_async_client_same_calls(service: tuple[FakeChatService, str], certs_dir: Path) -> None:
    fake, address = service
    fake.cancelled.clear()
    async with AsyncMultAI(address, priority="background", certs_dir=certs_dir) as client:
        whole = await client.chat.completions.create(model="echo", messages=QUESTION)
        assert whole.choices[0].message.content == "hello brave new world"
        assert fake.requests[-1].priority == common_pb2.PRIORITY_BACKGROUND
        vectors = await client.embeddings.create(model="e", input=["ab", "abc"], priority=0)
        assert [v.embedding[0] for v in vectors.data] == [2.0, 3.0]
        assert fake.requests[-1].priority == common_pb2.PRIORITY_URGENT

        stream = await client.chat.completions.create(model="endless", messages=QUESTION, stream=True)
        received = []
        async with stream:
            async for chunk in stream:
                received.append(chunk)
                if len(received) == 3:
                    break
        # The role chunk opens the choice, as through the REST bridge.
        assert [c.choices[0].delta.content for c in received[:2]] == ["", "hello"]
        assert await asyncio.to_thread(fake.cancelled.wait, 5)

        with pytest.raises(NotFoundError):
            await client.chat.completions.create(model="missing", messages=QUESTION, stream=True)
        with pytest.raises(APITimeoutError):
            await client.chat.completions.create(model="slow", messages=QUESTION, timeout=0.2)
        assert [m.id for m in await client.models.list()] == ["echo"]
