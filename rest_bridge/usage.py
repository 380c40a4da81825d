"""The calling API key and the current request's usage, in context variables.

KeyAuthMiddleware sets them; the route's tasks (a streaming response's too) inherit them, so the serving code
meters what the services report without passing the request around.
"""

from contextvars import ContextVar
from dataclasses import dataclass

from multai.api_keys import ApiKey


@dataclass
class RequestUsage:
    """What one request used, filled in by the serving code as the services report it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    audio_seconds: float = 0.0
    images: int = 0


current_key: ContextVar[ApiKey | None] = ContextVar("current_key", default=None)
current_usage: ContextVar[RequestUsage | None] = ContextVar("current_usage", default=None)


def meter() -> RequestUsage:
    """The current request's usage record (a throwaway one when no key is being metered)."""
    return current_usage.get() or RequestUsage()
