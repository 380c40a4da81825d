"""Supervisor: runs the mesh's processes, waits for their health, restarts crashes, stops them all."""

import asyncio
import ctypes
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from multai.mesh_tls import MeshChannels

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
READY_POLL_SECONDS = 0.2


def _die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM if the supervisor itself dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def grpc_serving(channels: MeshChannels, address: str) -> bool:
    """True when the gRPC health service at address says SERVING."""
    async with channels.aio_channel(address) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.aio.AioRpcError:
            return False
    serving: bool = response.status == health_pb2.HealthCheckResponse.SERVING
    return serving


async def http_ok(url: str) -> bool:
    """True when GET url answers 200."""
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    is_ready: Callable[[], Awaitable[bool]]
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    crash_streak: int = 0


class Supervisor:
    """Starts children in order, each once the previous is ready; restarts crashed ones with backoff."""

    def __init__(
        self,
        children: list[Child],
        ready_timeout: float,
        stop_grace: float,
        max_backoff: float = 10.0,
        stable_after: float = 30.0,
    ) -> None:
        self.children = children
        self._ready_timeout = ready_timeout
        self._stop_grace = stop_grace
        self._max_backoff = max_backoff
        self._stable_after = stable_after
        self._stopping = False

    async def run(self, stop: asyncio.Event) -> None:
        """Runs until `stop` is set, then stops every child."""
        try:
            for child in self.children:
                await self._start(child)
                await self._wait_ready(child)
            log.info("mesh ready: %s", ", ".join(c.name for c in self.children))
            watchers = [asyncio.create_task(self._watch(child)) for child in self.children]
            await stop.wait()
            for watcher in watchers:
                watcher.cancel()
        finally:
            self._stopping = True
            await self.stop_all()

    async def _start(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(*child.argv, preexec_fn=_die_with_parent)
        child.started_at = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.process.pid)

    async def _wait_ready(self, child: Child) -> None:
        deadline = time.monotonic() + self._ready_timeout
        while time.monotonic() < deadline:
            if child.process is not None and child.process.returncode is not None:
                raise RuntimeError(f"{child.name} exited with code {child.process.returncode} while starting")
            if await child.is_ready():
                log.info("%s is ready", child.name)
                return
            await asyncio.sleep(READY_POLL_SECONDS)
        raise RuntimeError(f"{child.name} was not ready within {self._ready_timeout:.0f}s")

    async def _watch(self, child: Child) -> None:
        while not self._stopping:
            assert child.process is not None
            code = await child.process.wait()
            if self._stopping:
                return
            ran_for = time.monotonic() - child.started_at
            child.crash_streak = 0 if ran_for > self._stable_after else child.crash_streak + 1
            delay = min(self._max_backoff, 0.5 * 2 ** max(0, child.crash_streak - 1))
            log.warning(
                "%s exited with code %s after %.1fs; restarting in %.1fs", child.name, code, ran_for, delay
            )
            await asyncio.sleep(delay)
            child.restarts += 1
            await self._start(child)

    async def stop_all(self) -> None:
        """SIGTERM to every child, newest layer first; SIGKILL to any still running after the grace."""
        for child in reversed(self.children):
            process = child.process
            if process is None or process.returncode is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._stop_grace)
            except TimeoutError:
                log.warning("%s did not stop in %.0fs; killing it", child.name, self._stop_grace)
                process.kill()
                await process.wait()
        log.info("all processes stopped")


def python_module(module: str, *args: str) -> list[str]:
    """argv to run a module of this project with the same interpreter."""
    return [sys.executable, "-m", module, *args]
