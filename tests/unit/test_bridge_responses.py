"""/v1/responses in the bridge: the translation to chat, and the JSON and events the official SDK parses.

The app is the real one with a real ChatServing over a fake ChatService stub, so the request goes through
the route, the Responses → chat translation and chat serving down to the protobuf the service would get.
"""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from multai.chat.v1 import chat_pb2
from multai.common.v1 import common_pb2
from multai.openai.responses import ResponsesRequest
from rest_bridge.app import create_app
from rest_bridge.config import BridgeSettings
from rest_bridge.errors import OpenAIError
from rest_bridge.serving.chat import ChatServing
from rest_bridge.serving.responses import ResponsesServing, to_chat_request

MODEL = "smollm2-135m-instruct"
STREAM_EVENT = TypeAdapter(ResponseStreamEvent)


def piece(
    delta: str = "",
    finish: chat_pb2.FinishReason.ValueType = chat_pb2.FINISH_REASON_UNSPECIFIED,
    calls: tuple[chat_pb2.ToolCallDelta, ...] = (),
    usage: tuple[int, int] | None = None,
) -> chat_pb2.CreateChatCompletionResponse:
    message = chat_pb2.CreateChatCompletionResponse(
        model=MODEL, delta=delta, finish_reason=finish, tool_calls=list(calls)
    )
    if usage is not None:
        message.usage.CopyFrom(
            common_pb2.Usage(prompt_tokens=usage[0], completion_tokens=usage[1], total_tokens=sum(usage))
        )
    return message


HELLO = [piece("Hel"), piece("lo!"), piece(finish=chat_pb2.FINISH_REASON_STOP, usage=(7, 2))]


class FakeCall:
    """A server-streaming call that yields the given messages, then fails with `error` if one is given."""

    def __init__(self, messages: list[chat_pb2.CreateChatCompletionResponse], error: grpc.StatusCode | None):
        self._messages = list(messages)
        self._error = error
        self.cancelled = False

    async def read(self) -> Any:
        if self._messages:
            return self._messages.pop(0)
        if self._error is not None:
            raise grpc.aio.AioRpcError(
                self._error, grpc.aio.Metadata(), grpc.aio.Metadata(), "engine crashed"
            )
        return grpc.aio.EOF

    def cancel(self) -> None:
        self.cancelled = True


class FakeChatStub:
    """ChatService.CreateChatCompletion answering with a script; records the requests it gets."""

    def __init__(self) -> None:
        self.script: list[chat_pb2.CreateChatCompletionResponse] = HELLO
        self.error: grpc.StatusCode | None = None
        self.requests: list[chat_pb2.CreateChatCompletionRequest] = []

    def CreateChatCompletion(self, message: chat_pb2.CreateChatCompletionRequest, **_: Any) -> FakeCall:
        self.requests.append(message)
        return FakeCall(self.script, self.error)


class NoModels:
    """A model listing that knows no model, so every request goes to the chat service."""

    async def find(self, name: str, request_id: str) -> None:
        return None


@pytest.fixture
def stub() -> FakeChatStub:
    return FakeChatStub()


@pytest.fixture
async def http(stub: FakeChatStub, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(BridgeSettings(image_store_dir=tmp_path / "images", state_dir=tmp_path / "state"))
    app.state.models = NoModels()
    app.state.chat = ChatServing(stub, app.state.models, vision=None, timeout=5)
    app.state.responses = ResponsesServing(app.state.chat)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost/v1") as client:
        yield client


def parse_events(body: str) -> list[Any]:
    """The SSE body as the SDK's typed events; each `event:` line must name its data's type."""
    events = []
    for block in body.strip().split("\n\n"):
        event_line, data_line = block.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}"
        events.append(STREAM_EVENT.validate_python(data))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


def request(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": MODEL, **fields})


def test_instructions_and_string_input_become_system_and_user_messages() -> None:
    chat = to_chat_request(request(input="Hi", instructions="Be brief.", max_output_tokens=5, temperature=0))
    assert [(m.role, m.content) for m in chat.messages] == [("system", "Be brief."), ("user", "Hi")]
    assert chat.max_completion_tokens == 5 and chat.temperature == 0


def test_items_become_a_chat_history_with_tool_calls_and_results() -> None:
    chat = to_chat_request(
        request(
            input=[
                {"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Checking."}],
                },
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "weather",
                    "arguments": '{"city":"Oslo"}',
                },
                {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "-3 C"},
                {
                    "type": "function_call_output",
                    "call_id": "call_2",
                    "output": [{"type": "input_text", "text": "9"}],
                },
            ]
        )
    )
    roles = [m.role for m in chat.messages]
    assert roles == ["user", "assistant", "tool", "tool"]
    assistant = chat.messages[1]
    assert assistant.text() == "Checking."
    assert [(c.id, c.function.name, c.function.arguments) for c in assistant.tool_calls or []] == [
        ("call_1", "weather", '{"city":"Oslo"}'),
        ("call_2", "time", "{}"),
    ]
    assert [(m.tool_call_id, m.text()) for m in chat.messages[2:]] == [("call_1", "-3 C"), ("call_2", "9")]


def test_text_format_tools_and_tool_choice_translate() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    chat = to_chat_request(
        request(
            input="x",
            text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}},
            tools=[{"type": "function", "name": "weather", "parameters": schema, "strict": True}],
            tool_choice={"type": "function", "name": "weather"},
            parallel_tool_calls=False,
        )
    )
    assert chat.response_format is not None and chat.response_format.json_schema is not None
    assert chat.response_format.json_schema.json_schema == schema
    assert chat.tools is not None and chat.tools[0].function.name == "weather"
    assert chat.tools[0].function.parameters == schema
    assert not isinstance(chat.tool_choice, str) and chat.tool_choice is not None
    assert chat.tool_choice.function.name == "weather"
    assert chat.parallel_tool_calls is False


def test_images_pass_through_as_chat_image_parts() -> None:
    url = "data:image/png;base64,iVBORw0KGgo="
    chat = to_chat_request(
        request(
            input=[{"role": "user", "content": [{"type": "input_image", "image_url": url, "detail": "low"}]}]
        )
    )
    [part] = chat.messages[0].image_parts()
    assert part.image_url.url == url and part.image_url.detail == "low"


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id", "stateless"),
        ({"input": "x", "conversation": "conv_1"}, "conversation", "stateless"),
        ({"input": "x", "background": True}, "background", "background"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type", "web_search"),
        ({"input": "x", "tool_choice": {"type": "file_search"}}, "tool_choice", "file_search"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0]",
            "file_id",
        ),
        ({"input": []}, "input", "non-empty"),
        ({}, "input", "required"),
    ],
)
def test_what_needs_state_or_hosted_tools_is_a_400_naming_the_param(
    fields: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(OpenAIError) as raised:
        to_chat_request(request(**fields))
    assert raised.value.status == 400
    assert (raised.value.param or "").startswith(param)
    assert words in raised.value.message


async def test_whole_response_parses_as_the_sdks_response(
    http: httpx.AsyncClient, stub: FakeChatStub
) -> None:
    reply = await http.post(
        "/responses",
        json={
            "model": MODEL,
            "input": "Say hello",
            "instructions": "Be nice.",
            "max_output_tokens": 20,
            "metadata": {"k": "v"},
            "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}},
        },
    )
    assert reply.status_code == 200, reply.text
    response = Response.model_validate(reply.json())
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.output_text == "Hello!"
    assert response.output[0].id.startswith("msg_")
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (
        7,
        2,
        9,
    )
    assert response.instructions == "Be nice." and response.max_output_tokens == 20
    assert response.metadata == {"k": "v"}
    assert reply.json()["text"]["format"]["schema"] == {"type": "object"}
    [sent] = stub.requests
    assert [(m.role, m.content) for m in sent.messages] == [("system", "Be nice."), ("user", "Say hello")]
    assert sent.sampling.max_tokens == 20
    assert sent.response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA


async def test_token_limit_makes_the_response_incomplete(http: httpx.AsyncClient, stub: FakeChatStub) -> None:
    stub.script = [piece("Hel"), piece(finish=chat_pb2.FINISH_REASON_LENGTH, usage=(7, 1))]
    response = Response.model_validate(
        (await http.post("/responses", json={"model": MODEL, "input": "x"})).json()
    )
    assert response.status == "incomplete"
    assert (
        response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    )
    assert response.output[0].status == "incomplete"

    body = (await http.post("/responses", json={"model": MODEL, "input": "x", "stream": True})).text
    assert parse_events(body)[-1].type == "response.incomplete"


async def test_stream_follows_openais_event_order(http: httpx.AsyncClient) -> None:
    reply = await http.post("/responses", json={"model": MODEL, "input": "Say hello", "stream": True})
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = parse_events(reply.text)
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert deltas == events[6].text == final.output_text == "Hello!"
    assert events[2].item.status == "in_progress" and events[8].item.status == "completed"
    assert final.usage is not None and final.usage.total_tokens == 9
    assert len({e.item_id for e in events if hasattr(e, "item_id")}) == 1


async def test_stream_of_a_forced_call_has_function_call_events(
    http: httpx.AsyncClient, stub: FakeChatStub
) -> None:
    stub.script = [
        piece(calls=(chat_pb2.ToolCallDelta(index=0, id="call_9", name="weather", arguments='{"city":'),)),
        piece(calls=(chat_pb2.ToolCallDelta(index=0, arguments=' "Oslo"}'),)),
        piece(finish=chat_pb2.FINISH_REASON_TOOL_CALLS, usage=(30, 8)),
    ]
    body = {
        "model": MODEL,
        "input": "Weather in Oslo?",
        "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
        "tool_choice": "required",
    }
    events = parse_events((await http.post("/responses", json={**body, "stream": True})).text)
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[5].arguments == '{"city": "Oslo"}'
    [call] = events[-1].response.output
    assert (call.type, call.call_id, call.name, call.status) == (
        "function_call",
        "call_9",
        "weather",
        "completed",
    )
    assert call.id.startswith("fc_") and json.loads(call.arguments) == {"city": "Oslo"}

    whole = Response.model_validate((await http.post("/responses", json=body)).json())
    [call] = whole.output
    assert call.type == "function_call" and call.call_id == "call_9" and call.arguments == '{"city": "Oslo"}'
    assert whole.tools[0].name == "weather" and whole.tool_choice == "required"
    assert stub.requests[0].tool_choice.mode == chat_pb2.TOOL_CHOICE_MODE_REQUIRED


async def test_text_then_call_are_two_items_in_order(http: httpx.AsyncClient, stub: FakeChatStub) -> None:
    stub.script = [
        piece("Let me check."),
        piece(calls=(chat_pb2.ToolCallDelta(index=0, id="call_1", name="weather", arguments="{}"),)),
        piece(finish=chat_pb2.FINISH_REASON_TOOL_CALLS, usage=(30, 8)),
    ]
    body = {"model": MODEL, "input": "x", "tools": [{"type": "function", "name": "weather"}]}
    events = parse_events((await http.post("/responses", json={**body, "stream": True})).text)
    done = [e for e in events if e.type == "response.output_item.done"]
    assert [(e.output_index, e.item.type) for e in done] == [(0, "message"), (1, "function_call")]
    assert [i.type for i in events[-1].response.output] == ["message", "function_call"]
    whole = Response.model_validate((await http.post("/responses", json=body)).json())
    assert [i.type for i in whole.output] == ["message", "function_call"]
    assert whole.output_text == "Let me check."


async def test_failure_mid_stream_is_an_error_event_then_response_failed(
    http: httpx.AsyncClient, stub: FakeChatStub
) -> None:
    stub.script = [piece("Hel")]
    stub.error = grpc.StatusCode.INTERNAL
    events = parse_events(
        (await http.post("/responses", json={"model": MODEL, "input": "x", "stream": True})).text
    )
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert "engine crashed" in events[-2].message
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "server_error"


async def test_stateless_and_unknown_tools_are_openai_400s(
    http: httpx.AsyncClient, stub: FakeChatStub
) -> None:
    for extra, param in (
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"tools": [{"type": "web_search_preview"}]}, "tools[0].type"),
    ):
        reply = await http.post("/responses", json={"model": MODEL, "input": "x", **extra})
        assert reply.status_code == 400
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param
    reply = await http.post(
        "/responses", json={"model": MODEL, "input": [{"type": "reasoning", "summary": []}]}
    )
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "input.0"
    assert stub.requests == []
