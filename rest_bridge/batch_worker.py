"""The batch worker: runs the lines of every batch through this bridge's own app, behind interactive work.

Each line is an ordinary request, sent in process to the bridge's ASGI app (so validation, translation,
metering and errors are exactly an interactive request's), at the batch's queue level (2, background, unless
an administrator chose 1). The request's scope carries a `BatchCaller`, which the key middleware reads to
charge the batch's key.

How many lines run at once follows the scheduler (see `lines_allowed`): the worker keeps to one model while
it has lines in flight, starts nothing while anyone else waits in the scheduler's queue, and otherwise fills
the model's batch slots but one. An urgent request therefore finds a slot free, or waits for the one line
that holds the model's only slot.
"""

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from multai.batch_store import BatchStore, ClaimedItem, output_line
from multai.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from rest_bridge.auth import BATCH_CALLER, BatchCaller
from rest_bridge.errors import OpenAIError, invalid_request
from rest_bridge.serving.models import ModelsServing

log = logging.getLogger(__name__)
# How often the worker looks for work when nothing ends sooner: new batches, lines to start, batches to end.
POLL_SECONDS = 0.5
SWEEP_SECONDS = 60.0
STATUS_TIMEOUT_SECONDS = 2.0
# Answers that say the mesh is busy or restarting: the line runs again later instead of failing.
RETRIED_STATUSES = (429, 503)
RETRY_AFTER_SECONDS = 5.0
# Batches write their responses whole; the bridge's own host name passes the Host check.
INTERNAL_BASE_URL = "http://127.0.0.1"


def lines_allowed(status: scheduler_pb2.GetStatusResponse | None, model: str, ours: Collection[str]) -> int:
    """How many of the worker's lines for `model` may be in flight, given the scheduler's state.

    None while anyone else waits in the queue: they go first. One while the model is not resident (its
    slots are unknown until it loads) or the scheduler does not answer. Otherwise the model's slots less
    one, less the slots that other requests hold, and at least one: an urgent request then joins the batch
    at once, or (with a single slot) waits for one line at most.
    """
    if status is None:
        return 1
    if any(waiter.request_id not in ours for waiter in status.queue):
        return 0
    resident = next((r for r in status.resident_models if r.model == model), None)
    if resident is None:
        return 1
    others = sum(1 for lease in status.leases if lease.model == model and lease.request_id not in ours)
    return max(1, resident.slots - 1 - others)


def _as_batch_line(app: ASGIApp, caller: BatchCaller) -> ASGIApp:
    async def call(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, BATCH_CALLER: caller}, receive, send)

    return call


def _prepared_body(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """The line's body as it is sent; raises OpenAIError for what a batch cannot return."""
    if body.get("stream"):
        raise invalid_request("a batch's requests cannot stream; remove `stream`", "stream")
    if url == "/v1/images/generations":
        # A URL would outlive neither the image store's time to live nor a move of the bridge.
        if body.get("response_format", "b64_json") != "b64_json":
            raise invalid_request("a batch returns images as b64_json only", "response_format")
        return {**body, "response_format": "b64_json"}
    return body


def _response_body(url: str, response: httpx.Response) -> Any:
    if url == "/v1/audio/speech" and response.is_success:
        return {
            "object": "audio.speech",
            "content_type": response.headers.get("content-type", "application/octet-stream"),
            "audio": base64.b64encode(response.content).decode(),
        }
    try:
        return response.json()
    except ValueError:
        return {"error": {"message": response.text, "type": "server_error", "param": None, "code": None}}


def _tokens(body: Any) -> tuple[int, int]:
    """(input, output) tokens from a response body's usage, in chat's or the Responses API's names."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    return (prompt, completion) if isinstance(prompt, int) and isinstance(completion, int) else (0, 0)


@dataclass
class _Running:
    item: ClaimedItem
    task: asyncio.Task[None]


class BatchWorker:
    """Validates, runs and ends batches; one per bridge process (several bridges share the work through
    the database's claims)."""

    def __init__(
        self,
        store: BatchStore,
        app: ASGIApp,
        scheduler: scheduler_pb2_grpc.SchedulerServiceStub,
        models: ModelsServing,
        lease_seconds: float,
    ) -> None:
        self._store = store
        self._app = app
        self._scheduler = scheduler
        self._models = models
        self._lease = lease_seconds
        self._running: dict[str, _Running] = {}
        # The model of the lines in flight: its canonical id and every name a line may give it.
        self._model: tuple[str, list[str]] | None = None
        self._wake = asyncio.Event()
        self._renewed = time.monotonic()
        self._swept = -SWEEP_SECONDS

    async def run_forever(self) -> None:
        """Works until cancelled; a failing step (the database briefly locked or down) is retried."""
        try:
            while True:
                try:
                    await self._step()
                except Exception as exc:
                    log.warning("batch worker step failed, retrying: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
                self._wake.clear()
        finally:
            await self._stop_lines()

    async def _step(self) -> None:
        await asyncio.to_thread(self._store.validate_pending)
        await asyncio.to_thread(self._store.finalize_ready)
        now = time.monotonic()
        if now - self._swept >= SWEEP_SECONDS:
            self._swept = now
            await asyncio.to_thread(self._store.sweep_files)
        if self._running and now - self._renewed >= self._lease / 3:
            self._renewed = now
            tokens = list({running.item.token for running in self._running.values()})
            await asyncio.to_thread(self._store.renew, tokens, self._lease)
        await self._start_lines()

    async def _scheduler_status(self) -> scheduler_pb2.GetStatusResponse | None:
        try:
            status: scheduler_pb2.GetStatusResponse = await self._scheduler.GetStatus(
                scheduler_pb2.GetStatusRequest(), timeout=STATUS_TIMEOUT_SECONDS
            )
            return status
        except grpc.aio.AioRpcError:
            return None

    async def _start_lines(self) -> None:
        if not self._running:
            self._model = None
            if not await asyncio.to_thread(self._store.has_claimable):
                return
        status = await self._scheduler_status()
        if not self._running:
            if lines_allowed(status, "", self._running) == 0:
                return
            claimed = await asyncio.to_thread(self._store.claim, 1, None, self._lease)
            if not claimed:
                return
            name = claimed[0].model or ""
            card = await self._models.find(name, claimed[0].request_id)
            self._model = (card.id, [card.id, *card.aliases]) if card is not None else (name, [name])
        else:
            assert self._model is not None
            free = lines_allowed(status, self._model[0], self._running) - len(self._running)
            if free <= 0:
                return
            claimed = await asyncio.to_thread(self._store.claim, free, self._model[1], self._lease)
        for item in claimed:
            self._running[item.request_id] = _Running(item, asyncio.create_task(self._run(item)))

    async def _run(self, item: ClaimedItem) -> None:
        try:
            status_code, body = await self._send(item)
            if status_code in RETRIED_STATUSES:
                await asyncio.to_thread(self._store.release, item, RETRY_AFTER_SECONDS)
                return
            line = output_line(item.request_id, item.custom_id, status_code, body)
            input_tokens, output_tokens = _tokens(body)
            failed = not 200 <= status_code < 300
            await asyncio.to_thread(self._store.record, item, line, failed, input_tokens, output_tokens)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The claim lapses and the line runs again (MAX_ATTEMPTS bounds how often).
            log.warning("batch line %s of %s failed, to be retried: %s", item.line, item.batch_id, exc)
        finally:
            self._running.pop(item.request_id, None)
            self._wake.set()

    async def _send(self, item: ClaimedItem) -> tuple[int, Any]:
        """The line's HTTP status and response body, from this bridge's own app."""
        body = json.loads(item.body)
        try:
            prepared = _prepared_body(item.url, body)
        except OpenAIError as refusal:
            return refusal.status, refusal.body()
        caller = BatchCaller(item.owner, item.priority)
        transport = httpx.ASGITransport(app=_as_batch_line(self._app, caller), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=INTERNAL_BASE_URL) as client:
            response = await client.post(item.url, json=prepared, headers={"X-Request-Id": item.request_id})
        return response.status_code, _response_body(item.url, response)

    async def _stop_lines(self) -> None:
        """Cancels the lines in flight and gives them back, so that the next worker starts them at once."""
        running = list(self._running.values())
        for line in running:
            line.task.cancel()
        await asyncio.gather(*(line.task for line in running), return_exceptions=True)
        for line in running:
            await asyncio.to_thread(self._store.release, line.item, 0.0)
