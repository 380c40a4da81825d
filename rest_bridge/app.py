"""The FastAPI application: routes, the gRPC channels behind them, request ids and error JSON."""

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2_grpc
from prometheus_client import CollectorRegistry
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from multai.api_keys import KeyStore
from multai.audio.v1 import audio_pb2_grpc
from multai.batch_store import BatchStore
from multai.chat.v1 import chat_pb2_grpc
from multai.common.v1 import model_control_pb2_grpc
from multai.image.v1 import image_pb2_grpc
from multai.mesh_tls import MeshChannels
from multai.openai.common import validation_failure
from multai.openai.files import MAX_FILE_BYTES
from multai.scheduler.v1 import scheduler_pb2_grpc
from multai.state_db import database_url, open_engine
from multai.tracing import flush_traces
from multai.vision.v1 import vision_pb2_grpc
from rest_bridge.auth import KeyAuthMiddleware, KeyRing
from rest_bridge.batch_worker import BatchWorker
from rest_bridge.config import BridgeSettings
from rest_bridge.errors import OpenAIError
from rest_bridge.guards import BodyLimitMiddleware, HostAllowListMiddleware
from rest_bridge.metrics import BridgeMetrics, RequestMetricsMiddleware
from rest_bridge.openapi import truthful_openapi
from rest_bridge.routes import (
    audio,
    batches,
    chat,
    completions,
    embeddings,
    files,
    health,
    images,
    models,
    responses,
    vision,
)
from rest_bridge.serving.audio import AudioServing
from rest_bridge.serving.chat import ChatServing
from rest_bridge.serving.completions import CompletionServing
from rest_bridge.serving.embeddings import EmbeddingServing
from rest_bridge.serving.image_input import ImageInputs
from rest_bridge.serving.images import ImageServing, ImageStore
from rest_bridge.serving.models import ModelsServing
from rest_bridge.serving.responses import ResponsesServing
from rest_bridge.serving.vision import VisionServing

REQUEST_ID_HEADER = "X-Request-Id"
CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# How often the bridge reloads keys (a new or revoked key takes effect within this) and writes usage.
KEY_SYNC_SECONDS = 1.0
# Room for a multipart upload's boundaries and fields around a file of the largest size.
MULTIPART_ENVELOPE_BYTES = 1024 * 1024


def validation_error(exc: RequestValidationError) -> OpenAIError:
    """A pydantic validation failure as OpenAI's 400, naming the first offending parameter."""
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":
        return OpenAIError(400, "We could not parse the JSON body of your request.", code="invalid_json")
    message, param = validation_failure(errors)
    return OpenAIError(400, message, param=param, code="invalid_value")


class RequestIdMiddleware:
    """Gives every request an id (the client's X-Request-Id when valid) and returns it on every response.

    Plain ASGI rather than @app.middleware: that wrapper hides client disconnects from the routes, and
    the routes need them to cancel work.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = incoming if CLIENT_REQUEST_ID.match(incoming) else f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        await self._app(scope, receive, send_with_id)


def create_app(settings: BridgeSettings) -> FastAPI:
    """The bridge's ASGI app; channels open on startup and close on shutdown."""
    metrics = CollectorRegistry()
    engine = open_engine(database_url(settings))
    keys = KeyRing(KeyStore(engine), metrics, settings.keys_required())
    batch_store = BatchStore(engine, settings.state_dir / "files", settings.file_retention_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        options = [
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
        ]
        mesh = MeshChannels.from_settings(settings)
        channels = {
            name: mesh.aio_channel(address, options)
            for name, address in (
                ("scheduler", settings.scheduler_address),
                ("chat", settings.chat_address),
                ("audio", settings.audio_address),
                ("image", settings.image_address),
                ("vision", settings.vision_address),
            )
        }
        timeout = settings.request_timeout_seconds
        app.state.models = ModelsServing(
            [model_control_pb2_grpc.ModelControlServiceStub(channels[name]) for name in settings.services]
        )
        image_inputs = ImageInputs(
            settings.remote_image_hosts, settings.max_image_input_bytes, settings.remote_image_timeout_seconds
        )
        vision = VisionServing(vision_pb2_grpc.VisionServiceStub(channels["vision"]), image_inputs, timeout)
        chat_stub = chat_pb2_grpc.ChatServiceStub(channels["chat"])
        app.state.chat = ChatServing(chat_stub, app.state.models, vision, timeout)
        app.state.responses = ResponsesServing(app.state.chat)
        app.state.completions = CompletionServing(chat_stub, timeout)
        app.state.embeddings = EmbeddingServing(chat_stub, timeout)
        app.state.audio = AudioServing(audio_pb2_grpc.AudioServiceStub(channels["audio"]), timeout)
        app.state.image_store = ImageStore(settings.image_store_dir, settings.image_url_ttl_seconds)
        app.state.images = ImageServing(
            image_pb2_grpc.ImageServiceStub(channels["image"]), app.state.image_store, timeout
        )
        app.state.public_base_url = settings.public_base_url
        app.state.health = {
            name: health_pb2_grpc.HealthStub(channels[name]) for name in ("scheduler", *settings.services)
        }
        app.state.metrics = metrics
        app.state.batch_store = batch_store
        worker = BatchWorker(
            batch_store,
            app,
            scheduler_pb2_grpc.SchedulerServiceStub(channels["scheduler"]),
            app.state.models,
            settings.batch_lease_seconds,
        )
        await keys.refresh()
        background = [
            asyncio.create_task(app.state.image_store.sweep_forever()),
            asyncio.create_task(keys.maintain_forever(KEY_SYNC_SECONDS)),
            asyncio.create_task(worker.run_forever()),
        ]
        yield
        for task in background:
            task.cancel()
        # The batch worker gives its lines in flight back before the channels close.
        await asyncio.gather(*background, return_exceptions=True)
        await asyncio.to_thread(keys.recorder.flush, keys.store)
        await asyncio.to_thread(flush_traces)
        for channel in channels.values():
            await channel.close()

    app = FastAPI(title="MultAI", version="0.1.0", lifespan=lifespan)
    for module in (
        chat,
        responses,
        completions,
        embeddings,
        audio,
        images,
        vision,
        files,
        batches,
        models,
        health,
    ):
        app.include_router(module.router)
    app.openapi = lambda: truthful_openapi(app)  # type: ignore[method-assign]

    # The last added runs first: request ids, metrics, the Host check, CORS, API keys, the body limit.
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_request_body_bytes,
        path_limits={"/v1/files": MAX_FILE_BYTES + MULTIPART_ENVELOPE_BYTES},
    )
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id", "X-MultAI-Priority"],
            expose_headers=["X-Request-Id"],
        )
    app.add_middleware(KeyAuthMiddleware, keys=keys)
    app.add_middleware(HostAllowListMiddleware, allowed_hosts=settings.answered_hosts())
    app.add_middleware(RequestMetricsMiddleware, metrics=BridgeMetrics(metrics))
    app.add_middleware(RequestIdMiddleware)

    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return OpenAIError(exc.status_code, str(exc.detail), type=error_type).response()

    return app
