"""What the blocking client does its own way: plain gRPC channels and blocking reads (see _aio.py)."""

from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

import grpc

from multai.mesh_tls import MeshChannels

ResultT = TypeVar("ResultT")

Channel: TypeAlias = grpc.Channel
# A server-streaming call of a plain channel: an iterator of messages that can be cancelled.
StreamCall: TypeAlias = Any


def open_channel(channels: MeshChannels, address: str, options: list[tuple[str, Any]]) -> Channel:
    return channels.sync_channel(address, options)


def read(call: StreamCall) -> Any | None:
    """The stream's next message; None once it has ended."""
    return next(call, None)


def in_thread(fn: Callable[..., ResultT], *args: Any) -> ResultT:
    """Blocking work, done in place: the caller is blocking anyway."""
    return fn(*args)


def gather(*results: ResultT) -> list[ResultT]:
    """The calls' results (made one after another, as the arguments were evaluated)."""
    return list(results)
