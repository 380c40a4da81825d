"""The gRPC client library of the mesh, shaped like the `openai` SDK: `MultAI` (blocking) and `AsyncMultAI`.

    from multai.client import MultAI

    client = MultAI(chat="127.0.0.1:50051", audio="127.0.0.1:50052", image="127.0.0.1:50053")
    reply = client.chat.completions.create(model="gpt-3.5-turbo", messages=[...], priority="urgent")

Exceptions carry the SDK's names (`multai.client.BadRequestError`, ...); response objects live in
`multai.client.types`. See docs/client.md.
"""

from multai.client import errors, types
from multai.client.async_client import AsyncMultAI, AsyncStream
from multai.client.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    MultAIError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
)
from multai.client.params import Priority
from multai.client.settings import ClientSettings
from multai.client.sync_client import MultAI, Stream

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncMultAI",
    "AsyncStream",
    "AuthenticationError",
    "BadRequestError",
    "ClientSettings",
    "ConflictError",
    "InternalServerError",
    "MultAI",
    "MultAIError",
    "NotFoundError",
    "PermissionDeniedError",
    "Priority",
    "RateLimitError",
    "Stream",
    "UnprocessableEntityError",
    "errors",
    "types",
]
