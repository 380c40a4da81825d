"""API keys at the bridge: who is calling, what the key may use, how much, and what it used.

With no key in the state database every route is open, as on a developer's loopback; once one exists every
/v1 route needs `Authorization: Bearer`. `KeyAuthMiddleware` finds the key and applies its rate limits;
`admit()`, called by each route once it has read the body, applies its model globs and priority tier.
The key and the request's usage travel in context variables, which the route's tasks (and a streaming
response's) inherit, so the serving code meters usage without passing the request around.
"""

import asyncio
import logging
from dataclasses import dataclass

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from multai.api_keys import ApiKey, KeyStore, UsageDelta, UsageRecorder, bearer_secret, find_key
from multai.common.v1 import common_pb2
from multai.openai_params import PRIORITY_NAMES
from multai.rate_limits import KeyLimiter
from rest_bridge.errors import OpenAIError
from rest_bridge.guards import send_error
from rest_bridge.serving.generation import DEFAULT_PRIORITY_LEVEL, priority_level, priority_to_pb
from rest_bridge.serving.models import ModelsServing, model_not_found
from rest_bridge.usage import RequestUsage, current_key, meter

log = logging.getLogger(__name__)
PROTECTED_PREFIX = "/v1/"
# Generated images are fetched by URL, often by a browser that sends no key; the URL's 256 random bits are
# what protects them (see ImageStore).
OPEN_PREFIXES = ("/v1/images/files/",)
# The ASGI scope key under which a batch's line, run in process through this app, names its batch's owner
# and priority. Only the batch worker sets it: nothing an outside caller sends reaches the scope's keys.
BATCH_CALLER = "multai.batch_caller"


@dataclass(frozen=True)
class BatchCaller:
    """Who a batch's line runs for: the name of the key that created the batch (None when the API had no
    keys then), and the queue level checked against that key's tier when the batch was created."""

    owner: str | None
    priority: int


class KeyRing:
    """The active keys, reloaded every second, and their usage, written every second, off the event loop."""

    def __init__(self, store: KeyStore, registry: CollectorRegistry, required: bool) -> None:
        self.store = store
        self._required = required
        self._active: dict[str, ApiKey] = {}
        self.recorder = UsageRecorder()
        self.limiter = KeyLimiter()
        self._requests = Counter("multai_key_requests", "Requests per API key.", ["key"], registry=registry)
        self._tokens = Counter(
            "multai_key_tokens",
            "Tokens per API key, by kind (prompt, completion).",
            ["key", "kind"],
            registry=registry,
        )
        self._audio = Counter(
            "multai_key_audio_seconds",
            "Seconds of audio transcribed or translated per API key.",
            ["key"],
            registry=registry,
        )
        self._images = Counter(
            "multai_key_images", "Images generated per API key.", ["key"], registry=registry
        )

    @property
    def enabled(self) -> bool:
        """Whether every /v1 route needs a key: one exists, or the bridge serves beyond loopback (where
        revoking the last key must close the API, not open it)."""
        return self._required or bool(self._active)

    def find(self, secret: str) -> ApiKey | None:
        """The active key with this secret."""
        return find_key(self._active, secret)

    def find_named(self, name: str) -> ApiKey | None:
        """The active key of that name."""
        return next((key for key in self._active.values() if key.name == name), None)

    async def refresh(self) -> None:
        """Reloads the active keys (a revoked key stops working within a second)."""
        self._active = await asyncio.to_thread(self.store.active)

    def record(self, key: ApiKey, usage: RequestUsage, rate_limited: bool = True) -> None:
        """Counts one finished request of key: usage totals, Prometheus and (when rate_limited) the
        tokens-per-minute bucket."""
        tokens = usage.prompt_tokens + usage.completion_tokens
        self.recorder.record(
            key.name,
            UsageDelta(1, usage.prompt_tokens, usage.completion_tokens, usage.audio_seconds, usage.images),
        )
        self._requests.labels(key.name).inc()
        self._tokens.labels(key.name, "prompt").inc(usage.prompt_tokens)
        self._tokens.labels(key.name, "completion").inc(usage.completion_tokens)
        self._audio.labels(key.name).inc(usage.audio_seconds)
        self._images.labels(key.name).inc(usage.images)
        if rate_limited:
            self.limiter.charge_tokens(key.name, tokens)

    async def maintain_forever(self, interval: float) -> None:
        """Reloads keys and writes usage every interval seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            # A database that is briefly locked or down must not end the task: nothing would write again.
            try:
                await self.refresh()
                await asyncio.to_thread(self.recorder.flush, self.store)
            except Exception as exc:
                log.warning("could not sync API keys and usage with the state database: %s", exc)


def _bearer(scope: Scope) -> str:
    return bearer_secret(Headers(scope=scope).get("authorization", ""))


class KeyAuthMiddleware:
    """Requires a valid key on /v1 routes once keys exist, and applies its rate limits (429 with OpenAI's
    x-ratelimit-* headers and Retry-After)."""

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self._app = app
        self._keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not self._keys.enabled
            or not path.startswith(PROTECTED_PREFIX)
            or path.startswith(OPEN_PREFIXES)
        ):
            await self._app(scope, receive, send)
            return
        caller: BatchCaller | None = scope.get(BATCH_CALLER)
        if caller is not None:
            await self._batch_line(caller, scope, receive, send)
            return
        key = self._keys.find(_bearer(scope))
        if key is None:
            await send_error(
                send,
                OpenAIError(
                    401,
                    "Incorrect API key provided. Create one with `multai keys create NAME`.",
                    type="authentication_error",
                    code="invalid_api_key",
                ),
            )
            return
        admission = self._keys.limiter.admit(key)
        rate_headers = [(name.lower().encode(), value.encode()) for name, value in admission.headers.items()]
        if not admission.admitted:
            error = OpenAIError(
                429,
                admission.refusal or "rate limit reached",
                type="rate_limit_error",
                code="rate_limit_exceeded",
            )
            await send_error(send, error, rate_headers)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *rate_headers]
            await send(message)

        usage = meter()
        key_token = current_key.set(key)
        try:
            await self._app(scope, receive, send_with_limits)
        finally:
            current_key.reset(key_token)
            self._keys.limiter.release(key.name)
            self._keys.record(key, usage)

    async def _batch_line(self, caller: BatchCaller, scope: Scope, receive: Receive, send: Send) -> None:
        """A batch's line runs as its batch's key, whose usage it counts; the key's rate limits do not apply,
        since the batch worker already runs its lines behind every interactive request."""
        if caller.owner is None:
            await self._app(scope, receive, send)
            return
        key = self._keys.find_named(caller.owner)
        if key is None:
            error = OpenAIError(
                401,
                f"The API key {caller.owner!r} that created this batch has been revoked.",
                type="authentication_error",
                code="invalid_api_key",
            )
            await send_error(send, error)
            return
        usage = meter()
        key_token = current_key.set(key)
        try:
            await self._app(scope, receive, send)
        finally:
            current_key.reset(key_token)
            self._keys.record(key, usage, rate_limited=False)


async def admit(
    request: Request, model: str, header: str | None, body_priority: int | None
) -> common_pb2.Priority.ValueType:
    """The request's priority once its key may use `model` at that priority.

    A model outside the key's globs is a 404, as if it did not exist. Asking for a priority above the key's
    tier is a 403: capping it silently would give the caller a slower answer than it asked for without
    telling it why. Without a priority asked for, a key's requests run at its tier's default.
    """
    models: ModelsServing = request.app.state.models
    card = await models.find(model, request.state.request_id)
    # Only installed models label the metrics, whatever names callers send.
    meter().model = card.id if card is not None else "unknown"
    key = current_key.get()
    if key is not None and card is not None and not key.allows_model([card.id, *card.aliases]):
        raise model_not_found(model)
    caller: BatchCaller | None = request.scope.get(BATCH_CALLER)
    if caller is not None:
        # A batch's lines run at the batch's level, which its creation checked against the key's tier.
        return priority_to_pb(None, caller.priority)
    if key is None:
        return priority_to_pb(header, body_priority)
    default = max(key.max_priority, DEFAULT_PRIORITY_LEVEL)
    level = priority_level(header, body_priority, default)
    if not key.allows_priority(level):
        raise OpenAIError(
            403,
            f"this API key may use priority {key.max_priority} ({PRIORITY_NAMES[key.max_priority]}) and "
            f"lower, not {level} ({PRIORITY_NAMES[level]})",
            type="permission_error",
            param="priority",
            code="priority_not_allowed",
        )
    return priority_to_pb(header, body_priority, default)
