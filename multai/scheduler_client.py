"""SchedulerClient: how a modality service registers with the scheduler and takes leases.

Registration is one long-lived stream that survives scheduler restarts (the client re-registers with what
it has loaded); each lease is one Acquire stream, held open for exactly as long as the inference runs.
"""

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc

from multai.common.v1 import common_pb2
from multai.errors import ResourceExhaustedError, ServiceUnavailableError
from multai.mesh_tls import MeshChannels
from multai.scheduler.v1 import scheduler_pb2 as pb
from multai.scheduler.v1 import scheduler_pb2_grpc

log = logging.getLogger(__name__)

RECONNECT_DELAY_SECONDS = 0.5
MIN_RENEW_SECONDS = 0.05


@dataclass(frozen=True)
class Grant:
    """A lease as the holder sees it."""

    lease_id: str
    fencing_token: int
    device: common_pb2.Device.ValueType
    gpu_layers: int
    ttl_seconds: float


@dataclass(frozen=True)
class ResidentReport:
    """A model the service has loaded."""

    model: str
    device: common_pb2.Device.ValueType
    measured_bytes: int
    load_seconds: float = 0.0


async def _nothing_to_unload(model: str) -> None:
    """For a client that holds no models (tools, benchmarks): an unload command has nothing to do."""


class SchedulerClient:
    """Registers the service's models and hands out leases; unload commands go to `on_unload`."""

    def __init__(self, address: str, service_name: str, channels: MeshChannels) -> None:
        self._channel = channels.aio_channel(address)
        self._stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)
        self._service_name = service_name
        self._footprints: list[pb.ModelFootprint] = []
        self._on_unload: Callable[[str], Awaitable[object]] = _nothing_to_unload
        self._resident_models: Callable[[], list[ResidentReport]] = list
        self._outgoing: asyncio.Queue[pb.RegisterRequest] | None = None
        self._service_id: str | None = None
        self._registered = asyncio.Event()
        self._register_task: asyncio.Task[None] | None = None
        self._unload_tasks: set[asyncio.Task[None]] = set()
        self._fencing_floor = 0

    async def start(
        self,
        timeout: float,
        footprints: list[pb.ModelFootprint],
        on_unload: Callable[[str], Awaitable[object]] = _nothing_to_unload,
        resident_models: Callable[[], list[ResidentReport]] = list,
    ) -> None:
        """Registers `footprints`, retrying until the scheduler answers or `timeout` passes. After a lost
        connection it registers again, with the models `resident_models` says are loaded."""
        self._footprints = footprints
        self._on_unload = on_unload
        self._resident_models = resident_models
        self._register_task = asyncio.create_task(self._keep_registered())
        try:
            await asyncio.wait_for(self._registered.wait(), timeout)
        except TimeoutError as exc:
            raise ServiceUnavailableError(f"scheduler not reachable within {timeout:.0f}s") from exc

    async def close(self) -> None:
        """Ends the registration (the scheduler reclaims everything) and the channel."""
        if self._register_task is not None:
            self._register_task.cancel()
        await self._channel.close()

    def report_resident(self, report: ResidentReport) -> None:
        """Tells the scheduler a model is loaded and how much memory it took."""
        self._send(
            pb.RegisterRequest(
                resident=pb.ModelResident(
                    model=report.model,
                    device=report.device,
                    measured_bytes=report.measured_bytes,
                    load_seconds=report.load_seconds,
                )
            )
        )

    def update_catalog(self, footprints: list[pb.ModelFootprint]) -> None:
        """Tells the scheduler the service's models changed; a re-registration announces these."""
        self._footprints = footprints
        self._send(pb.RegisterRequest(catalog=pb.ServiceCatalog(models=footprints)))

    def report_evicted(self, model: str) -> None:
        """Tells the scheduler a model's memory is free."""
        self._send(pb.RegisterRequest(evicted=pb.ModelEvicted(model=model)))

    def _send(self, message: pb.RegisterRequest) -> None:
        # While disconnected there is nothing to tell: the next hello carries the resident models.
        if self._outgoing is not None:
            self._outgoing.put_nowait(message)

    async def _keep_registered(self) -> None:
        while True:
            try:
                await self._register_once()
            except grpc.aio.AioRpcError as exc:
                log.warning("scheduler registration lost (%s); retrying", exc.code().name)
            self._registered.clear()
            self._service_id = None
            self._outgoing = None
            await asyncio.sleep(RECONNECT_DELAY_SECONDS)

    async def _register_once(self) -> None:
        outgoing: asyncio.Queue[pb.RegisterRequest] = asyncio.Queue()
        hello = pb.ServiceHello(
            service=self._service_name,
            pid=os.getpid(),
            models=self._footprints,
            resident=[
                pb.ModelResident(model=r.model, device=r.device, measured_bytes=r.measured_bytes)
                for r in self._resident_models()
            ],
        )
        outgoing.put_nowait(pb.RegisterRequest(hello=hello))
        self._outgoing = outgoing

        async def requests() -> AsyncIterator[pb.RegisterRequest]:
            while True:
                yield await outgoing.get()

        async for response in self._stub.Register(requests()):
            kind = response.WhichOneof("command")
            if kind == "registered":
                self._service_id = response.registered.service_id
                self._fencing_floor = response.registered.fencing_floor
                self._registered.set()
                log.info("registered with the scheduler as %s", self._service_id)
            elif kind == "unload":
                task = asyncio.create_task(self._unload(response.unload.model))
                self._unload_tasks.add(task)
                task.add_done_callback(self._unload_tasks.discard)

    async def _unload(self, model: str) -> None:
        await self._on_unload(model)
        self.report_evicted(model)

    @asynccontextmanager
    async def lease(
        self, request_id: str, model: str, priority: common_pb2.Priority.ValueType, wait_timeout: float
    ) -> AsyncIterator[Grant]:
        """Waits in the scheduler's queue, then holds a lease for the body of the `async with`.

        The lease is renewed in the background. If it is lost without being released (it expired, the
        scheduler restarted, or revoked it), the body is cancelled and ServiceUnavailableError raised: the
        device may already belong to someone else.
        """
        try:
            await asyncio.wait_for(self._registered.wait(), wait_timeout)
        except TimeoutError as exc:
            raise ServiceUnavailableError("the scheduler is not reachable; retry later") from exc
        claim = pb.LeaseClaim(
            service_id=self._service_id or "", request_id=request_id, model=model, priority=priority
        )
        outgoing: asyncio.Queue[pb.AcquireRequest | None] = asyncio.Queue()
        outgoing.put_nowait(pb.AcquireRequest(claim=claim))

        async def requests() -> AsyncIterator[pb.AcquireRequest]:
            while (message := await outgoing.get()) is not None:
                yield message

        call = self._stub.Acquire(requests())
        try:
            async with asyncio.timeout(wait_timeout):
                grant = await self._first_grant(call)
        except TimeoutError as exc:
            call.cancel()
            raise ServiceUnavailableError(
                f"no lease for {model} within {wait_timeout:.0f}s; retry later"
            ) from exc
        except BaseException:
            call.cancel()
            raise
        holder = _LeaseKeeper(call, outgoing, grant.ttl_seconds)
        try:
            yield grant
        except asyncio.CancelledError:
            if holder.lost.is_set() and holder.owner.uncancel() == 0:
                raise ServiceUnavailableError(f"lease for {model} lost ({holder.reason}); retry") from None
            raise
        finally:
            holder.release()

    async def _first_grant(self, call: grpc.aio.StreamStreamCall) -> Grant:
        try:
            async for response in call:
                if response.WhichOneof("event") == "granted":
                    granted = response.granted
                    # A token below the floor was granted by a scheduler instance that has since restarted.
                    if granted.fencing_token < self._fencing_floor:
                        raise ServiceUnavailableError("stale lease from a restarted scheduler; retry")
                    return Grant(
                        granted.lease_id,
                        granted.fencing_token,
                        granted.device,
                        granted.gpu_layers,
                        granted.ttl_seconds,
                    )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise ResourceExhaustedError(exc.details() or "no capacity") from exc
            raise ServiceUnavailableError(f"scheduler: {exc.details()}") from exc
        raise ServiceUnavailableError("the scheduler ended the lease stream before granting")


class _LeaseKeeper:
    """Renews a held lease at a third of its TTL and cancels its owner task if the lease is lost."""

    def __init__(
        self, call: grpc.aio.StreamStreamCall, outgoing: asyncio.Queue[pb.AcquireRequest | None], ttl: float
    ) -> None:
        owner = asyncio.current_task()
        if owner is None:
            raise RuntimeError("a lease must be held inside an asyncio task")
        self.owner = owner
        self.lost = asyncio.Event()
        self.reason = ""
        self._call = call
        self._outgoing = outgoing
        self._renew_every = max(ttl / 3, MIN_RENEW_SECONDS)
        self._releasing = False
        loop = asyncio.get_running_loop()
        self._renewal = loop.call_later(self._renew_every, self._renew)
        self._watcher = asyncio.create_task(self._watch())

    def _renew(self) -> None:
        self._outgoing.put_nowait(pb.AcquireRequest(renew=pb.RenewLease()))
        self._renewal = asyncio.get_running_loop().call_later(self._renew_every, self._renew)

    async def _watch(self) -> None:
        """Reads renewal acknowledgements; the stream ending while held means the lease is gone."""
        try:
            async for _ in self._call:
                pass
        except grpc.aio.AioRpcError as exc:
            self.reason = exc.details() or exc.code().name
        else:
            self.reason = "the scheduler closed the lease"
        if not self._releasing:
            self._renewal.cancel()
            self.lost.set()
            self.owner.cancel()

    def release(self) -> None:
        """Sends the release, closes the stream and stops renewing."""
        self._releasing = True
        self._renewal.cancel()
        self._outgoing.put_nowait(pb.AcquireRequest(release=pb.ReleaseLease()))
        self._outgoing.put_nowait(None)
        self._watcher.cancel()


async def fetch_status(channels: MeshChannels, address: str) -> pb.GetStatusResponse:
    """One GetStatus call to the scheduler at `address`."""
    async with channels.aio_channel(address) as channel:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        status: pb.GetStatusResponse = await stub.GetStatus(pb.GetStatusRequest(), timeout=5)
        return status
