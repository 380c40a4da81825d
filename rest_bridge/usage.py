"""The calling API key and the current request's usage, in context variables.

RequestMetricsMiddleware sets the usage record of every request and KeyAuthMiddleware the key; the route's
tasks (a streaming response's too) inherit them, so the serving code meters what the services report
without passing the request around.
"""

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from multai.api_keys import ApiKey


@dataclass
class RequestUsage:
    """What one request used and when its outputs went out, filled in as the services report them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    audio_seconds: float = 0.0
    images: int = 0
    # The canonical id of the model the request named, once auth.admit() has looked it up.
    model: str = ""
    started: float = field(default_factory=time.monotonic)
    # When each piece of a generation stream was handed on to the client (monotonic seconds).
    output_times: list[float] = field(default_factory=list)


current_key: ContextVar[ApiKey | None] = ContextVar("current_key", default=None)
current_usage: ContextVar[RequestUsage | None] = ContextVar("current_usage", default=None)


def meter() -> RequestUsage:
    """The current request's usage record (a throwaway one outside a request)."""
    return current_usage.get() or RequestUsage()
