"""ASGI guards in front of every route: the Host allow-list and the request body limit.

Plain ASGI, as RequestIdMiddleware: they answer before the app reads anything, and they keep client
disconnects visible to the routes.
"""

import json
from collections.abc import Mapping, Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rest_bridge.errors import OpenAIError

# Names that always reach a process bound to loopback; any other Host header is a DNS-rebinding attempt
# unless the operator lists it.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


async def send_error(send: Send, error: OpenAIError, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Sends error as the whole response, with headers added."""
    body = json.dumps(error.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def host_name(host_header: str) -> str:
    """The name in a Host header, without its port; IPv6 literals lose their brackets."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


class HostAllowListMiddleware:
    """Refuses requests whose Host header names no allowed host (DNS rebinding); "*" allows any."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self._app = app
        self._any = "*" in allowed_hosts
        self._allowed = {host.lower().strip("[]") for host in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._any:
            await self._app(scope, receive, send)
            return
        host = host_name(Headers(scope=scope).get("host", "")).lower()
        if host not in self._allowed:
            error = OpenAIError(
                400,
                f"the Host header {host!r} is not one this server answers to; an operator can add it to "
                "MULTAI_ALLOWED_HOSTS",
                code="host_not_allowed",
            )
            await send_error(send, error)
            return
        await self._app(scope, receive, send)


class BodyLimitMiddleware:
    """Answers 413 to a body over the limit: at once from Content-Length, else as soon as the read passes it.

    Nothing past the limit is read, and the route's own answer (if it already began) is dropped for the 413.
    `path_limits` gives some paths a limit of their own (file uploads).
    """

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self._app = app
        self._default_max = max_body_bytes
        self._path_limits = dict(path_limits or {})

    @staticmethod
    def _too_large(limit: int) -> OpenAIError:
        return OpenAIError(
            413,
            f"the request body is larger than this server's limit of {limit} bytes",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        limit = self._path_limits.get(scope.get("path", ""), self._default_max)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_error(send, self._too_large(limit))
            return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # The route sees the client leave, so it stops reading and abandons its work.
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, limited_receive, guarded_send)
        except Exception:
            # A route that failed on the cut-off body (a parser, a disconnect) is answered by the 413.
            if not exceeded:
                raise
        if exceeded and not started:
            await send_error(send, self._too_large(limit))
