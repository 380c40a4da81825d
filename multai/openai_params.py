"""OpenAI-facing values that the REST bridge and the client library read the same way: priority levels,
finish reasons and image sizes."""

import re

from multai.chat.v1 import chat_pb2
from multai.common.v1 import common_pb2

# Index = the level that X-MultAI-Priority, the body's `priority` and the client's `priority=` take.
PRIORITY_NAMES = ("urgent", "normal", "background")
IMAGE_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


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
