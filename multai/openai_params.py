"""OpenAI-facing values that the REST bridge and the client library read the same way: priority levels,
finish reasons, embedding inputs, image models and sizes."""

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from annotated_types import Interval
from google.protobuf.message import Message

from multai.chat.v1 import chat_pb2
from multai.common.v1 import common_pb2
from multai.errors import InvalidRequestError

# The header that picks a request's queue level (the edge's endpoint picker reads it too).
PRIORITY_HEADER = "X-MultAI-Priority"
# Index = the level that X-MultAI-Priority, the body's `priority` and the client's `priority=` take.
PRIORITY_NAMES = ("urgent", "normal", "background")
# tool_choice's string forms; a named function is TOOL_CHOICE_MODE_FUNCTION with its name.
TOOL_CHOICE_MODES = {
    "auto": chat_pb2.TOOL_CHOICE_MODE_AUTO,
    "none": chat_pb2.TOOL_CHOICE_MODE_NONE,
    "required": chat_pb2.TOOL_CHOICE_MODE_REQUIRED,
}
RESPONSE_FORMAT_TYPES = {
    "text": chat_pb2.RESPONSE_FORMAT_TYPE_TEXT,
    "json_object": chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
    "json_schema": chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
}
IMAGE_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
DEFAULT_IMAGE_MODEL = "dall-e-2"
# Classifier-free guidance past this only burns the picture.
MAX_GUIDANCE_SCALE = 30.0
# OpenAI's limit on inputs per embeddings request.
MAX_EMBEDDING_INPUTS = 2048
# OpenAI's limit for chat and completions.
MAX_STOP_SEQUENCES = 4
# Each choice takes a slot of the model's batch; past its slots they wait their turn under the same lease.
MAX_CHOICES = 8
# OpenAI's limits.
MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 100.0


INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Bound:
    """The allowed range of a numeric field, inclusive; `positive` excludes the lower end."""

    low: float
    high: float
    positive: bool = False

    def interval(self) -> Interval:
        """The bound as a constraint for a pydantic field's Annotated type, so /openapi.json shows it."""
        return Interval(gt=self.low, le=self.high) if self.positive else Interval(ge=self.low, le=self.high)

    def holds(self, value: float) -> bool:
        """Whether value is in range; NaN never is."""
        above = value > self.low if self.positive else value >= self.low
        return above and value <= self.high and not math.isnan(value)

    def text(self) -> str:
        """The range in words, for error messages."""
        if self.positive:
            return f"greater than {self.low:g} and at most {self.high:g}"
        return f"between {self.low:g} and {self.high:g}"


# The bounds of the sampling and engine fields. The request models declare them, so /openapi.json shows
# them and no value outside protobuf's range reaches a message; the services check them again
# (check_bounds), so a direct gRPC caller cannot do what a REST caller cannot.
SAMPLING_BOUNDS: dict[str, Bound] = {
    "temperature": Bound(0, 2),
    "top_p": Bound(0, 1),
    "max_tokens": Bound(1, INT32_MAX),
    "seed": Bound(INT64_MIN, INT64_MAX),
    "presence_penalty": Bound(-2, 2),
    "frequency_penalty": Bound(-2, 2),
    "top_k": Bound(0, INT32_MAX),
    "repeat_penalty": Bound(0, 100, positive=True),
}
ENGINE_BOUNDS: dict[str, Bound] = {
    # More threads than cores only contend; 256 is past any machine this serves.
    "n_threads": Bound(1, 256),
    # -1 offloads every layer.
    "n_gpu_layers": Bound(-1, 100_000),
}


# OpenAI's range for transcription and translation.
TRANSCRIPTION_BOUNDS: dict[str, Bound] = {"temperature": Bound(0, 1)}


def check_bounds(message: Message, bounds: Mapping[str, Bound]) -> None:
    """Raises InvalidRequestError naming the first set field of message that is out of its bound."""
    for name, bound in bounds.items():
        if message.HasField(name) and not bound.holds(getattr(message, name)):
            raise InvalidRequestError(f"{name} must be {bound.text()}", param=name)


def checked_stops(stops: Sequence[str]) -> list[str]:
    """A request's stop sequences, at most MAX_STOP_SEQUENCES; the services check, so all callers meet it."""
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(f"stop holds more than {MAX_STOP_SEQUENCES} sequences", param="stop")
    return list(stops)


def priority_of_level(level: int) -> common_pb2.Priority.ValueType | None:
    """0, 1 or 2 as the protobuf priority; None for any other number."""
    if not 0 <= level < len(PRIORITY_NAMES):
        return None
    return common_pb2.Priority.Value(f"PRIORITY_{PRIORITY_NAMES[level].upper()}")


def finish_reason_name(value: chat_pb2.FinishReason.ValueType) -> str | None:
    """FINISH_REASON_TOOL_CALLS as "tool_calls"; None while the choice is unfinished."""
    if value == chat_pb2.FINISH_REASON_UNSPECIFIED:
        return None
    return chat_pb2.FinishReason.Name(value).removeprefix("FINISH_REASON_").lower()


def image_dimensions(size: str | None) -> tuple[int, int] | None:
    """A size such as "256x128" as (width, height); None or "auto" as (0, 0), the model's own size.

    None when the text is neither.
    """
    if size is None or size == "auto":
        return 0, 0
    match = IMAGE_SIZE.match(size)
    return (int(match[1]), int(match[2])) if match else None


def embedding_inputs(
    value: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]],
) -> list[chat_pb2.EmbeddingInput]:
    """OpenAI's four input shapes (a string, strings, one token array, token arrays) as protobuf inputs.

    Raises ValueError for anything else; its text names the fault, which is always in `input`.
    """
    one_input = isinstance(value, str) or (bool(value) and all(isinstance(item, int) for item in value))
    items = [value] if one_input else list(value)
    if not items:
        raise ValueError("input must not be empty")
    if len(items) > MAX_EMBEDDING_INPUTS:
        raise ValueError(f"input holds more than {MAX_EMBEDDING_INPUTS} items")
    return [_embedding_input(item, index) for index, item in enumerate(items)]


def _embedding_input(item: object, index: int) -> chat_pb2.EmbeddingInput:
    if isinstance(item, str):
        return chat_pb2.EmbeddingInput(text=item)
    if isinstance(item, Sequence) and item and all(isinstance(token, int) for token in item):
        return chat_pb2.EmbeddingInput(tokens=chat_pb2.TokenIds(ids=item))
    raise ValueError(f"input[{index}] must be a string or a non-empty list of token ids")
