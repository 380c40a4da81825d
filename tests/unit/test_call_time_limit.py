"""The service's longest run time per call, enforced by DomainErrorInterceptor on a real grpc.aio server."""

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from multai.chat.v1 import chat_pb2, chat_pb2_grpc
from multai.grpc_server import DomainErrorInterceptor

LIMIT_SECONDS = 0.5


class SlowChat(chat_pb2_grpc.ChatServiceServicer):
    """Streams a piece every 0.1 s for as long as asked; records whether its work was stopped."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()

    async def CreateCompletion(
        self, request: chat_pb2.CreateCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.CreateCompletionResponse]:
        try:
            for _ in range(int(request.prompt)):
                await asyncio.sleep(0.1)
                yield chat_pb2.CreateCompletionResponse(delta="x")
        finally:
            self.stopped.set()

    async def CreateEmbeddings(
        self, request: chat_pb2.CreateEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.CreateEmbeddingsResponse:
        await asyncio.sleep(float(request.model))
        return chat_pb2.CreateEmbeddingsResponse(model=request.model)


async def serve(servicer: SlowChat) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(interceptors=[DomainErrorInterceptor(LIMIT_SECONDS)])
    chat_pb2_grpc.add_ChatServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_a_stream_past_the_limit_is_cut_and_its_work_stopped() -> None:
    servicer = SlowChat()
    server, address = await serve(servicer)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            started = time.monotonic()
            received = 0
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                async for _ in stub.CreateCompletion(
                    chat_pb2.CreateCompletionRequest(prompt="100"), timeout=30
                ):
                    received += 1
            assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "limit of 0.5s" in (failed.value.details() or "")
            assert LIMIT_SECONDS <= time.monotonic() - started < 3
            assert 0 < received < 100
            await asyncio.wait_for(servicer.stopped.wait(), 5)
    finally:
        await server.stop(0)


async def test_calls_within_the_limit_are_untouched() -> None:
    server, address = await serve(SlowChat())
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            pieces = [m async for m in stub.CreateCompletion(chat_pb2.CreateCompletionRequest(prompt="3"))]
            assert len(pieces) == 3
            assert (await stub.CreateEmbeddings(chat_pb2.CreateEmbeddingsRequest(model="0.1"))).model == "0.1"
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.CreateEmbeddings(chat_pb2.CreateEmbeddingsRequest(model="2"))
            assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await server.stop(0)
