"""What the asynchronous client does its own way: grpc.aio channels and awaited reads.

async_client.py calls these; sync_client.py, generated from it, calls their blocking twins in _sync.py.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc

from multai.mesh_tls import MeshChannels

ResultT = TypeVar("ResultT")

Channel: TypeAlias = grpc.aio.Channel
StreamCall: TypeAlias = grpc.aio.UnaryStreamCall


def open_channel(channels: MeshChannels, address: str, options: list[tuple[str, Any]]) -> Channel:
    return channels.aio_channel(address, options)


async def read(call: StreamCall) -> Any | None:
    """The stream's next message; None once it has ended."""
    message = await call.read()
    return None if message is grpc.aio.EOF else message


async def in_thread(fn: Callable[..., ResultT], *args: Any) -> ResultT:
    """Blocking work (a file read) off the event loop."""
    return await asyncio.to_thread(fn, *args)


async def gather(*calls: Awaitable[ResultT]) -> list[ResultT]:
    """The calls' results, the calls made at once."""
    return list(await asyncio.gather(*calls))
