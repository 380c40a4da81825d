"""Tool calling without an engine: tool_choice resolution, the forced-call schema, and the reply parsers."""

import itertools
import json
from typing import Any

import jsonschema
import pytest

from multai.errors import InvalidRequestError
from services.chat.backends.base import FunctionTool, Message, ToolCall
from services.chat.backends.chat_template import CHATML_TEMPLATE, ChatTemplate
from services.chat.tools import (
    CallArguments,
    CallStart,
    ContentPiece,
    ForcedCallParser,
    ReplyParser,
    ReplyPiece,
    TaggedCallParser,
    ToolChoice,
    ToolMode,
    check_tools,
    forced_call_schema,
    resolve_tool_choice,
)

WEATHER = FunctionTool(
    "get_weather",
    "The current weather of a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
)
TIME = FunctionTool(
    "get_time",
    "The local time of a place.",
    {
        "type": "object",
        "$defs": {
            "place": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        },
        "properties": {"where": {"$ref": "#/$defs/place"}},
        "required": ["where"],
    },
)
NO_PARAMETERS = FunctionTool("ping")


def sequential_ids() -> Any:
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def feed_in_chunks(parser: ReplyParser, text: str, size: int) -> list[ReplyPiece]:
    pieces: list[ReplyPiece] = []
    for start in range(0, len(text), size):
        pieces += parser.feed(text[start : start + size])
    return pieces + parser.close()


def assemble(pieces: list[ReplyPiece]) -> tuple[str, list[tuple[str, str, str]]]:
    """Content and (id, name, arguments) calls, as a client merges streamed pieces."""
    content = "".join(p.text for p in pieces if isinstance(p, ContentPiece))
    calls: dict[int, list[str]] = {}
    for piece in pieces:
        if isinstance(piece, CallStart):
            assert piece.index == len(calls), "calls start in order"
            calls[piece.index] = [piece.call_id, piece.name, ""]
        elif isinstance(piece, CallArguments):
            calls[piece.index][2] += piece.text
    return content, [(c[0], c[1], c[2]) for c in calls.values()]


# tool_choice


def test_unset_tool_choice_is_auto_with_tools_and_none_without() -> None:
    assert resolve_tool_choice(None, "", [WEATHER]).mode is ToolMode.AUTO
    assert resolve_tool_choice(None, "", []).mode is ToolMode.NONE


def test_named_function_must_be_declared() -> None:
    assert resolve_tool_choice(ToolMode.FUNCTION, "get_weather", [WEATHER]).forced
    with pytest.raises(InvalidRequestError) as error:
        resolve_tool_choice(ToolMode.FUNCTION, "get_stock_price", [WEATHER, TIME])
    assert error.value.param == "tool_choice"
    assert "get_weather" in error.value.message


def test_required_needs_tools() -> None:
    with pytest.raises(InvalidRequestError) as error:
        resolve_tool_choice(ToolMode.REQUIRED, "", [])
    assert error.value.param == "tool_choice"


# Declared tools


def test_valid_tools_pass() -> None:
    check_tools([WEATHER, TIME, NO_PARAMETERS])


def test_duplicate_function_names_are_refused() -> None:
    with pytest.raises(InvalidRequestError) as error:
        check_tools([WEATHER, FunctionTool("get_weather")])
    assert error.value.param == "tools[1].function.name"


@pytest.mark.parametrize(
    "parameters",
    [
        {"type": "objekt"},
        {"type": "object", "properties": {"city": {"type": 5}}},
        {"type": "object", "required": "city"},
        {"type": "string"},
    ],
)
def test_invalid_parameter_schemas_are_refused(parameters: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as error:
        check_tools([NO_PARAMETERS, FunctionTool("broken", "", parameters)])
    assert error.value.param == "tools[1].function.parameters"


# The forced-call schema


def test_named_function_schema_admits_only_that_function_with_valid_arguments() -> None:
    schema = forced_call_schema([WEATHER, TIME], ToolChoice(ToolMode.FUNCTION, "get_weather"), parallel=True)
    jsonschema.validate({"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}, schema)
    for wrong in [
        {"name": "get_time", "arguments": {"where": {"city": "Oslo"}}},
        {"name": "get_weather", "arguments": {"city": "Oslo"}},
        {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "kelvin"}},
        [{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}],
    ]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schema)


def test_required_schema_admits_any_declared_function_and_keeps_local_references() -> None:
    single = forced_call_schema([WEATHER, TIME], ToolChoice(ToolMode.REQUIRED), parallel=False)
    jsonschema.validate({"name": "get_time", "arguments": {"where": {"city": "Lima"}}}, single)
    # The $ref inside get_time's parameters still reaches its own $defs.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "get_time", "arguments": {"where": {"town": "Lima"}}}, single)

    several = forced_call_schema([WEATHER, TIME], ToolChoice(ToolMode.REQUIRED), parallel=True)
    calls = [
        {"name": "get_weather", "arguments": {"city": "Lima", "unit": "celsius"}},
        {"name": "get_time", "arguments": {"where": {"city": "Lima"}}},
    ]
    jsonschema.validate(calls, several)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([], several)


def test_function_without_parameters_takes_an_empty_object() -> None:
    schema = forced_call_schema([NO_PARAMETERS], ToolChoice(ToolMode.FUNCTION, "ping"), parallel=False)
    jsonschema.validate({"name": "ping", "arguments": {}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "ping"}, schema)


# Parsing "auto" replies


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_tagged_calls_become_calls_and_the_rest_content(chunk_size: int) -> None:
    reply = (
        "Let me check.\n"
        "<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>\n'
        '<tool_call>{"name": "get_time", "arguments": "{\\"where\\": {\\"city\\": \\"Paris\\"}}"}</tool_call>'
    )
    parser = TaggedCallParser({"get_weather", "get_time"}, parallel=True, new_id=sequential_ids())
    content, calls = assemble(feed_in_chunks(parser, reply, chunk_size))
    assert content == "Let me check."
    assert [(i, n, json.loads(a)) for i, n, a in calls] == [
        ("call_0", "get_weather", {"city": "Paris", "unit": "celsius"}),
        ("call_1", "get_time", {"where": {"city": "Paris"}}),
    ]
    assert parser.calls == 2


def test_blocks_that_are_not_calls_of_declared_functions_stay_content() -> None:
    reply = '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call> and <tool_call>not json</tool_call>'
    parser = TaggedCallParser({"get_weather"}, parallel=True)
    content, calls = assemble(feed_in_chunks(parser, reply, 4))
    assert content == reply
    assert calls == [] and parser.calls == 0


def test_text_that_only_looks_like_a_tag_start_is_released() -> None:
    parser = TaggedCallParser({"get_weather"}, parallel=True)
    assert parser.feed("a < b and <tool") == [ContentPiece("a < b and")]
    assert assemble(parser.feed("s> here") + parser.close()) == (" <tools> here", [])


def test_unclosed_call_at_the_end_of_the_reply_still_counts() -> None:
    parser = TaggedCallParser({"get_weather"}, parallel=True, new_id=sequential_ids())
    reply = '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}'
    assert assemble(feed_in_chunks(parser, reply, 5)) == (
        "",
        [("call_0", "get_weather", '{"city": "Rome", "unit": "celsius"}')],
    )


def test_without_parallel_calls_only_the_first_call_is_kept() -> None:
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "%s"}}</tool_call>\n'
    parser = TaggedCallParser({"get_weather"}, parallel=False, new_id=sequential_ids())
    _, calls = assemble(feed_in_chunks(parser, call % "Rome" + call % "Oslo", 7))
    assert calls == [("call_0", "get_weather", '{"city": "Rome"}')]


# Parsing forced replies


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 1000])
def test_forced_single_call_streams_its_arguments(chunk_size: int) -> None:
    arguments = '{ "city": "a } tricky \\" [city", "unit" :"celsius"}'
    reply = '{ "name": "get_weather", "arguments": ' + arguments + "}"
    parser = ForcedCallParser(new_id=sequential_ids())
    content, calls = assemble(feed_in_chunks(parser, reply, chunk_size))
    assert content == ""
    assert calls == [("call_0", "get_weather", arguments)]
    assert json.loads(calls[0][2]) == {"city": 'a } tricky " [city', "unit": "celsius"}


@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_forced_list_of_calls_gives_each_call(chunk_size: int) -> None:
    reply = (
        '[{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}, '
        '{"name": "get_time", "arguments": {"where": {"city": "Oslo"}}}]'
    )
    parser = ForcedCallParser(new_id=sequential_ids())
    content, calls = assemble(feed_in_chunks(parser, reply, chunk_size))
    assert content == ""
    assert [(n, json.loads(a)) for _, n, a in calls] == [
        ("get_weather", {"city": "Oslo", "unit": "celsius"}),
        ("get_time", {"where": {"city": "Oslo"}}),
    ]
    assert [i for i, _, _ in calls] == ["call_0", "call_1"]


def test_forced_reply_cut_before_any_call_is_content() -> None:
    parser = ForcedCallParser()
    assert assemble(feed_in_chunks(parser, '{"na', 2)) == ('{"na', [])


# Rendering tools into a template that does not know them


def test_text_protocol_describes_tools_and_writes_calls_and_results() -> None:
    template = ChatTemplate(CHATML_TEMPLATE, bos_token="", eos_token="<|im_end|>")
    assert not template.native_tools
    call = ToolCall("call_7", "get_weather", '{"city": "Paris", "unit": "celsius"}')
    prompt = template.render(
        [
            Message("system", "Be brief."),
            Message("user", "Weather in Paris?"),
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", '{"temperature": 21}', tool_call_id="call_7"),
        ],
        [WEATHER],
    )
    system, user, assistant, result = prompt.split("<|im_start|>")[1:5]
    assert system.startswith("system\nBe brief.\n\n# Tools") and '"name": "get_weather"' in system
    assert user.startswith("user\nWeather in Paris?")
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}' in assistant
    )
    assert result.startswith('user\n<tool_response>\n{"temperature": 21}\n</tool_response>')
    assert prompt.endswith("<|im_start|>assistant\n")


def test_template_that_knows_tools_gets_them_natively() -> None:
    native = (
        "{% for t in tools or [] %}[tool {{ t.function.name }}: {{ t.function.description }}]{% endfor %}"
        "{% for m in messages %}"
        "{% if m.tool_calls %}{% for c in m.tool_calls %}<call {{ c.function.name }} "
        "{{ c.function.arguments.probe or c.function.arguments.city }}>{% endfor %}"
        "{% elif m.role == 'tool' %}<result {{ m.tool_call_id }} {{ m.content }}>"
        "{% else %}<{{ m.role }} {{ m.content }}>{% endif %}"
        "{% endfor %}"
    )
    template = ChatTemplate(native, bos_token="", eos_token="</s>")
    assert template.native_tools
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    prompt = template.render(
        [
            Message("user", "Oslo?"),
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", "9C", "", (), "call_1"),
        ],
        [WEATHER],
    )
    assert prompt == (
        "[tool get_weather: The current weather of a city.]"
        "<user Oslo?><call get_weather Oslo><result call_1 9C>"
    )
