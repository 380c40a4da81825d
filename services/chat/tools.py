"""Tool calling, independent of the engine: which calls a request forces, the text protocol that describes
tools to models whose chat template cannot, and the parsers that turn generated text into tool calls.

The text protocol is the Hermes one (Qwen 2.5, SmolLM2-class and Hermes models are trained on it): tools
are listed as JSON inside <tools></tools>, and a call is
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

- tool_choice "auto": the reply is parsed for <tool_call> blocks; anything else is content. Arguments are
  only checked to be a JSON object, because nothing constrains the model here.
- "required" or a named function: the whole reply is generated under a grammar built from
  `forced_call_schema`, so it is a call object (or, for "required" with parallel calls, a list of them)
  whose arguments validate against the function's parameters.
"""

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from multai.errors import InvalidRequestError
from multai.streamed_text import partial_marker_length
from services.chat.backends.base import FunctionTool, ToolCall

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


class ToolMode(Enum):
    """Whether and which tools the model must call."""

    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"
    FUNCTION = "function"


@dataclass(frozen=True)
class ToolChoice:
    """The resolved tool_choice of a request."""

    mode: ToolMode
    function_name: str = ""

    @property
    def forced(self) -> bool:
        """Whether the reply must be tool calls, generated under a grammar."""
        return self.mode in (ToolMode.REQUIRED, ToolMode.FUNCTION)


def resolve_tool_choice(mode: ToolMode | None, function_name: str, tools: list[FunctionTool]) -> ToolChoice:
    """The effective choice (unset: auto with tools, none without); the named function must exist."""
    if mode is None:
        return ToolChoice(ToolMode.AUTO if tools else ToolMode.NONE)
    if mode is not ToolMode.NONE and not tools:
        raise InvalidRequestError(
            "tool_choice needs tools; declare the functions in tools", param="tool_choice"
        )
    if mode is ToolMode.FUNCTION:
        names = [t.name for t in tools]
        if function_name not in names:
            raise InvalidRequestError(
                f"tool_choice names the function '{function_name}', which is not in tools "
                f"({', '.join(names)})",
                param="tool_choice",
            )
    return ToolChoice(mode, function_name)


def check_tools(tools: list[FunctionTool]) -> None:
    """Function names must be unique, as calls refer to functions by name; parameters must be JSON Schemas."""
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        if not tool.name:
            raise InvalidRequestError("every function needs a name", param=f"tools[{index}].function.name")
        if tool.name in seen:
            raise InvalidRequestError(
                f"the function name '{tool.name}' is declared twice", param=f"tools[{index}].function.name"
            )
        seen.add(tool.name)
        if tool.parameters is not None:
            _check_parameters_schema(tool.parameters, f"tools[{index}].function.parameters")


def _check_parameters_schema(schema: dict[str, Any], param: str) -> None:
    """The schema must be valid under its own $schema (or the latest draft) and describe an object."""
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise InvalidRequestError(
            f"parameters is not a valid JSON Schema: {exc.message}", param=param
        ) from exc
    if schema.get("type", "object") != "object":
        raise InvalidRequestError("parameters must describe a JSON object (type 'object')", param=param)


def new_call_id() -> str:
    """A call id in OpenAI's format."""
    return f"call_{uuid.uuid4().hex[:24]}"


def tool_definition(tool: FunctionTool) -> dict[str, Any]:
    """A tool as OpenAI's JSON shows it, which is also what chat templates expect."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters if tool.parameters is not None else EMPTY_PARAMETERS,
        },
    }


def tools_system_prompt(tools: list[FunctionTool]) -> str:
    """The system prompt section that describes tools to a model whose template cannot."""
    listing = "\n".join(json.dumps(tool_definition(t), ensure_ascii=False) for t in tools)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{listing}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        f"{TOOL_CALL_OPEN}{TOOL_CALL_CLOSE} XML tags:\n"
        f'{TOOL_CALL_OPEN}\n{{"name": <function-name>, "arguments": <args-json-object>}}\n{TOOL_CALL_CLOSE}'
    )


def call_arguments_object(call: ToolCall) -> Any:
    """The arguments as a JSON value (templates expect a mapping); text that does not parse stays text."""
    try:
        return json.loads(call.arguments)
    except ValueError:
        return call.arguments


def tool_call_text(call: ToolCall) -> str:
    """A past call as the text protocol writes it."""
    body = json.dumps({"name": call.name, "arguments": call_arguments_object(call)}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


def tool_response_text(content: str) -> str:
    """A tool result as the text protocol writes it."""
    return f"{TOOL_RESPONSE_OPEN}\n{content}\n{TOOL_RESPONSE_CLOSE}"


def forced_call_schema(tools: list[FunctionTool], choice: ToolChoice, parallel: bool) -> dict[str, Any]:
    """The JSON Schema of a forced reply: a call object {"name", "arguments"}, or a non-empty list of them.

    "name" comes first, so the stream parser learns the function before its arguments. A named function
    and "required" without parallel calls give one call; "required" with parallel calls gives a list.
    """
    candidates = [t for t in tools if choice.mode is ToolMode.REQUIRED or t.name == choice.function_name]
    definitions: dict[str, Any] = {}
    variants = []
    for index, tool in enumerate(candidates):
        key = f"tool{index}"
        parameters = _relocate_refs(tool.parameters or EMPTY_PARAMETERS, f"#/$defs/{key}")
        if "type" not in parameters:
            parameters = {**parameters, "type": "object"}
        definitions[key] = parameters
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": parameters},
                "required": ["name", "arguments"],
            }
        )
    call = variants[0] if len(variants) == 1 else {"anyOf": variants}
    schema = (
        {"type": "array", "items": call, "minItems": 1}
        if choice.mode is ToolMode.REQUIRED and parallel
        else call
    )
    # Each function's own "#/..." references now point at its copy here.
    return {**schema, "$defs": definitions}


def _relocate_refs(schema: Any, base: str) -> Any:
    """A copy of a schema whose local references ("#/...") resolve under `base` of an enclosing schema."""
    if isinstance(schema, dict):
        return {
            key: f"{base}{value[1:]}"
            if key == "$ref" and isinstance(value, str) and value.startswith("#")
            else _relocate_refs(value, base)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_relocate_refs(item, base) for item in schema]
    return schema


@dataclass(frozen=True)
class ContentPiece:
    """Reply text that is not a tool call."""

    text: str


@dataclass(frozen=True)
class CallStart:
    """The first piece of a tool call: its position in the reply, id and function."""

    index: int
    call_id: str
    name: str


@dataclass(frozen=True)
class CallArguments:
    """The next piece of a call's arguments JSON."""

    index: int
    text: str


ReplyPiece = ContentPiece | CallStart | CallArguments


class ReplyParser(Protocol):
    """Splits a reply, fed as it is generated, into content and tool-call pieces."""

    calls: int

    def feed(self, text: str) -> list[ReplyPiece]:
        """The pieces that the text generated so far settles."""

    def close(self) -> list[ReplyPiece]:
        """The pieces still held back, at the end of the reply."""


def reply_parser(tools: list[FunctionTool], choice: ToolChoice, parallel: bool) -> ReplyParser | None:
    """The parser for a request's replies; None when the reply is plain text."""
    if choice.forced:
        return ForcedCallParser()
    if choice.mode is ToolMode.AUTO and tools:
        return TaggedCallParser({t.name for t in tools}, parallel)
    return None


class TaggedCallParser:
    """tool_choice "auto": <tool_call> blocks become calls, everything else is content.

    A block is held back until it closes (or the reply ends), then parsed whole; one that is not a call of a
    declared function stays content. Whitespace between calls is layout, so a reply of calls only has no
    content.
    """

    def __init__(
        self, function_names: set[str], parallel: bool, new_id: Callable[[], str] = new_call_id
    ) -> None:
        self._function_names = function_names
        self._parallel = parallel
        self._new_id = new_id
        self._buffer = ""
        self._inside = False
        self._held_whitespace = ""
        self.calls = 0

    def feed(self, text: str) -> list[ReplyPiece]:
        self._buffer += text
        pieces: list[ReplyPiece] = []
        while True:
            if not self._inside:
                start = self._buffer.find(TOOL_CALL_OPEN)
                if start < 0:
                    # A partial opening tag at the end may still become a call.
                    keep = partial_marker_length(self._buffer, TOOL_CALL_OPEN)
                    pieces += self._content(self._buffer[: len(self._buffer) - keep])
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    return pieces
                pieces += self._content(self._buffer[:start])
                self._buffer = self._buffer[start + len(TOOL_CALL_OPEN) :]
                self._inside = True
            else:
                end = self._buffer.find(TOOL_CALL_CLOSE)
                if end < 0:
                    return pieces
                pieces += self._block(self._buffer[:end], closed=True)
                self._buffer = self._buffer[end + len(TOOL_CALL_CLOSE) :]
                self._inside = False

    def close(self) -> list[ReplyPiece]:
        # A model may end its turn without the closing tag; the block still counts if it parses.
        pieces = self._block(self._buffer, closed=False) if self._inside else self._content(self._buffer)
        self._buffer = ""
        self._inside = False
        if not self.calls and self._held_whitespace:
            pieces.append(ContentPiece(self._held_whitespace))
        self._held_whitespace = ""
        return pieces

    def _content(self, text: str) -> list[ReplyPiece]:
        text = self._held_whitespace + text
        settled = text.rstrip()
        self._held_whitespace = text[len(settled) :]
        return [ContentPiece(settled)] if settled else []

    def _block(self, body: str, closed: bool) -> list[ReplyPiece]:
        parsed = _parse_call(body, self._function_names)
        if parsed is None:
            return self._content(TOOL_CALL_OPEN + body + (TOOL_CALL_CLOSE if closed else ""))
        if self.calls and not self._parallel:
            # parallel_tool_calls=false: one call per reply; later ones are dropped.
            return []
        self._held_whitespace = ""
        name, arguments = parsed
        index = self.calls
        self.calls += 1
        return [CallStart(index, self._new_id(), name), CallArguments(index, arguments)]


def _parse_call(body: str, function_names: set[str]) -> tuple[str, str] | None:
    """(name, arguments JSON) of a call object of a declared function, or None."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("name") not in function_names:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return value["name"], json.dumps(arguments, ensure_ascii=False)


_CALL_HEADER = re.compile(r'\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*')
_BETWEEN_CALLS = " \t\r\n[,]"


class ForcedCallParser:
    """A reply generated under `forced_call_schema`'s grammar: one call object or a list of them.

    The grammar fixes the layout ({"name": ..., "arguments": {...}}), so each call starts as soon as its
    name is complete and its arguments stream as they are generated.
    """

    def __init__(self, new_id: Callable[[], str] = new_call_id) -> None:
        self._new_id = new_id
        self._buffer = ""
        self._in_arguments = False
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self.calls = 0

    def feed(self, text: str) -> list[ReplyPiece]:
        self._buffer += text
        pieces: list[ReplyPiece] = []
        while self._buffer:
            if self._in_arguments:
                if self._depth == 0:
                    # The grammar may put a space before the arguments object; it is not part of it.
                    self._buffer = self._buffer.lstrip()
                    if not self._buffer:
                        break
                consumed, done = self._scan_arguments()
                if consumed:
                    pieces.append(CallArguments(self.calls - 1, self._buffer[:consumed]))
                    self._buffer = self._buffer[consumed:]
                if not done:
                    break
                self._in_arguments = False
                continue
            # Between calls: the end of the previous call object, list punctuation and whitespace.
            rest = self._buffer.lstrip(_BETWEEN_CALLS + "}")
            self._buffer = rest
            header = _CALL_HEADER.match(rest)
            if header is None:
                break
            pieces.append(CallStart(self.calls, self._new_id(), json.loads(header.group(1))))
            self.calls += 1
            self._buffer = rest[header.end() :]
            self._in_arguments = True
            self._depth = 0
        return pieces

    def close(self) -> list[ReplyPiece]:
        # Under the grammar everything is a call; text is only left over if generation stopped mid-header.
        leftover = self._buffer.strip(_BETWEEN_CALLS + "}")
        self._buffer = ""
        return [ContentPiece(leftover)] if leftover and not self.calls else []

    def _scan_arguments(self) -> tuple[int, bool]:
        """How many buffered characters belong to the arguments value, and whether it is complete."""
        for position, char in enumerate(self._buffer):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return position + 1, True
        return len(self._buffer), False
