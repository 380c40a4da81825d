"""Cancelling work whose HTTP client has gone away."""

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from rest_bridge.errors import OpenAIError

T = TypeVar("T")
DISCONNECT_POLL_SECONDS = 0.25


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Awaits `work`, cancelling it (and so its gRPC call and lease) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise OpenAIError(499, "client closed the request", type="server_error")
    finally:
        if not task.done():
            task.cancel()
