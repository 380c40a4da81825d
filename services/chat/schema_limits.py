"""Limits on the JSON Schemas of one request (response_format and tool parameters).

Each schema becomes a llama.cpp grammar that the engine thread compiles and then steps at every sampled
token of the batch, so an unbounded schema (a 100,000-value enum, say) stalls every stream of the model,
not only its own. The limits follow OpenAI's for structured outputs and are checked before any lease.
"""

import json
from typing import Any

from multai.errors import InvalidRequestError

# For all the schemas of a request together.
MAX_SCHEMA_CHARACTERS = 100_000
MAX_ENUM_VALUES = 1_000
# For each schema.
MAX_SCHEMA_DEPTH = 32
# OpenAI's limit on tools per request.
MAX_TOOLS = 128


class SchemaBudget:
    """Parses a request's schemas one by one, refusing them once together they pass the limits."""

    def __init__(self) -> None:
        self._characters = 0
        self._enum_values = 0

    def parse(self, text: str, param: str) -> Any:
        """The parsed schema; InvalidRequestError naming param when it is not JSON or too large."""
        self._characters += len(text)
        if self._characters > MAX_SCHEMA_CHARACTERS:
            raise InvalidRequestError(
                f"the request's JSON Schemas hold more than {MAX_SCHEMA_CHARACTERS} characters", param=param
            )
        try:
            schema = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InvalidRequestError(f"the schema is not valid JSON: {exc}", param=param) from exc
        self._enum_values += _count_enum_values(schema, param)
        if self._enum_values > MAX_ENUM_VALUES:
            raise InvalidRequestError(
                f"the request's JSON Schemas list more than {MAX_ENUM_VALUES} enum values", param=param
            )
        return schema


def _count_enum_values(schema: Any, param: str) -> int:
    """The enum and const values in schema, walked without recursion; refuses nesting past the limit."""
    count = 0
    pending: list[tuple[Any, int]] = [(schema, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise InvalidRequestError(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels", param=param)
        if isinstance(node, dict):
            enum = node.get("enum")
            count += len(enum) if isinstance(enum, list) else 0
            count += "const" in node
            pending.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list):
            pending.extend((value, depth + 1) for value in node)
    return count
