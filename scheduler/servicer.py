"""SchedulerService: protobuf in, LeaseArbiter calls, protobuf out."""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable

import grpc

from multai.common.v1 import common_pb2
from multai.errors import InvalidRequestError, MultaiError
from multai.scheduler.v1 import scheduler_pb2 as pb
from multai.scheduler.v1 import scheduler_pb2_grpc
from scheduler.arbiter import Lease, LeaseArbiter
from scheduler.memory import DeviceKind, Footprint
from scheduler.queue import Level

log = logging.getLogger(__name__)
# A watch hears every change within this (bursts coalesce), and a message at least this often without one.
WATCH_COALESCE_SECONDS = 0.01
WATCH_HEARTBEAT_SECONDS = 2.0

DEVICE_TO_PB = {DeviceKind.CPU: common_pb2.DEVICE_CPU, DeviceKind.GPU: common_pb2.DEVICE_GPU}
DEVICE_FROM_PB = {v: k for k, v in DEVICE_TO_PB.items()}
LEVEL_FROM_PB = {
    common_pb2.PRIORITY_UNSPECIFIED: Level.NORMAL,
    common_pb2.PRIORITY_URGENT: Level.URGENT,
    common_pb2.PRIORITY_NORMAL: Level.NORMAL,
    common_pb2.PRIORITY_BACKGROUND: Level.BACKGROUND,
}


def _footprints(models: Iterable[pb.ModelFootprint]) -> dict[str, Footprint]:
    return {m.model: Footprint(m.size_bytes, m.n_layers, max(1, m.slots), m.base) for m in models}


def _aliases(models: Iterable[pb.ModelFootprint]) -> dict[str, list[str]]:
    return {m.model: list(m.aliases) for m in models}


class LeaseRevokedError(MultaiError):
    """The lease ended without the holder releasing it: it expired or its service went away."""

    status = grpc.StatusCode.ABORTED
    code = "lease_revoked"


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    """Translates the scheduler's RPCs for the arbiter."""

    def __init__(self, arbiter: LeaseArbiter) -> None:
        self._arbiter = arbiter

    async def Register(
        self, request_iterator: AsyncIterator[pb.RegisterRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RegisterResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("event") != "hello":
            raise InvalidRequestError("the first message of Register must be a hello")
        hello = first.hello
        service = self._arbiter.register(
            hello.service,
            hello.pid,
            _footprints(hello.models),
            {r.model: (DEVICE_FROM_PB[r.device], r.measured_bytes) for r in hello.resident},
            _aliases(hello.models),
        )
        events = asyncio.create_task(self._consume_events(request_iterator, service.service_id))
        try:
            yield pb.RegisterResponse(
                registered=pb.Registered(
                    service_id=service.service_id, fencing_floor=self._arbiter.fencing_floor
                )
            )
            while not events.done():
                command = asyncio.create_task(service.unload_commands.get())
                await asyncio.wait({command, events}, return_when=asyncio.FIRST_COMPLETED)
                if command.done():
                    yield pb.RegisterResponse(unload=pb.UnloadCommand(model=command.result()))
                else:
                    command.cancel()
        finally:
            events.cancel()
            self._arbiter.unregister(service.service_id)

    async def _consume_events(
        self, request_iterator: AsyncIterator[pb.RegisterRequest], service_id: str
    ) -> None:
        async for event in request_iterator:
            kind = event.WhichOneof("event")
            if kind == "resident":
                r = event.resident
                self._arbiter.model_resident(
                    service_id, r.model, DEVICE_FROM_PB[r.device], r.measured_bytes, r.load_seconds
                )
            elif kind == "evicted":
                self._arbiter.model_evicted(event.evicted.model)
            elif kind == "catalog":
                models = event.catalog.models
                self._arbiter.update_catalog(service_id, _footprints(models), _aliases(models))

    async def Acquire(
        self, request_iterator: AsyncIterator[pb.AcquireRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AcquireResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("event") != "claim":
            raise InvalidRequestError("the first message of Acquire must be a claim")
        claim = first.claim
        waiter = self._arbiter.enqueue(
            claim.service_id, claim.request_id, claim.model, LEVEL_FROM_PB[claim.priority]
        )
        lease: Lease | None = None
        try:
            grant = self._arbiter.grant_of(waiter)
            if not grant.done():
                # Only a waiter that really waits hears its position; an immediate grant saves a message.
                yield pb.AcquireResponse(queued=pb.Queued(position=self._arbiter.position(waiter)))
            lease = await grant
            yield pb.AcquireResponse(
                granted=pb.Granted(
                    lease_id=lease.lease_id,
                    fencing_token=lease.fencing_token,
                    device=DEVICE_TO_PB[lease.device],
                    gpu_layers=lease.gpu_layers,
                    ttl_seconds=lease.expires_at - time.monotonic(),
                )
            )
            async for renewed in self._hold(lease, request_iterator):
                yield renewed
            if lease.revoked.is_set():
                raise LeaseRevokedError(f"lease {lease.lease_id} revoked: {lease.revoke_reason}")
        finally:
            self._arbiter.leave(waiter, lease)

    async def _hold(
        self, lease: Lease, request_iterator: AsyncIterator[pb.AcquireRequest]
    ) -> AsyncIterator[pb.AcquireResponse]:
        """Answers renewals until the holder releases, closes the stream, or the lease is revoked."""
        requests = aiter(request_iterator)
        revoked = asyncio.create_task(lease.revoked.wait())
        try:
            while True:
                message = asyncio.create_task(anext(requests, None))
                await asyncio.wait({message, revoked}, return_when=asyncio.FIRST_COMPLETED)
                if not message.done():
                    message.cancel()
                    return
                request = message.result()
                if request is None or request.WhichOneof("event") == "release":
                    return
                if request.WhichOneof("event") == "renew":
                    yield pb.AcquireResponse(renewed=pb.Renewed(ttl_seconds=self._arbiter.renew(lease)))
        finally:
            revoked.cancel()

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatusResponse:
        return self._status()

    async def WatchStatus(
        self, request: pb.WatchStatusRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchStatusResponse]:
        version = -1
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arbiter.changed_since(version), WATCH_HEARTBEAT_SECONDS)
            version = self._arbiter.version
            yield pb.WatchStatusResponse(status=self._status())
            # A burst of changes (a batch of grants) becomes one message.
            await asyncio.sleep(WATCH_COALESCE_SECONDS)

    def _status(self) -> pb.GetStatusResponse:
        arbiter = self._arbiter
        now = time.monotonic()
        warm = {m for m, r in arbiter.resident.items() if not r.unloading}
        names = {s.service_id: s.name for s in arbiter.services.values()}
        return pb.GetStatusResponse(
            queue=[
                pb.WaiterStatus(
                    request_id=w.request_id,
                    model=w.model,
                    level=int(w.level),
                    waited_seconds=now - w.enqueued_at,
                )
                for w in arbiter.queue.ordered(warm)
            ],
            leases=[
                pb.LeaseStatus(
                    lease_id=lease.lease_id,
                    request_id=lease.request_id,
                    model=lease.model,
                    device=DEVICE_TO_PB[lease.device],
                    held_seconds=now - lease.granted_at,
                    service=names.get(lease.service_id, ""),
                    expires_in_seconds=lease.expires_at - now,
                )
                for lease in arbiter.leases.values()
            ],
            resident_models=[
                pb.ResidentModelStatus(
                    model=r.model,
                    service=names.get(r.service_id, ""),
                    device=DEVICE_TO_PB[r.device],
                    size_bytes=r.size_bytes,
                    idle_seconds=0.0 if r.active_leases else now - r.last_used,
                    slots=r.slots,
                    slots_in_use=r.active_leases,
                    unloading=r.unloading,
                )
                for r in arbiter.resident.values()
            ],
            devices=[
                pb.DeviceStatus(
                    device=DEVICE_TO_PB[d.kind],
                    name=d.name,
                    budget_bytes=d.budget_bytes,
                    used_bytes=arbiter.planner.used_bytes(d.kind, arbiter.resident),
                    active_leases=arbiter.planner.active_leases(d.kind, arbiter.resident),
                )
                for d in arbiter.planner.devices
            ],
            services=[
                pb.ServiceStatus(
                    service=s.name,
                    service_id=s.service_id,
                    pid=s.pid,
                    models=[
                        pb.ModelFootprint(
                            model=model,
                            size_bytes=footprint.size_bytes,
                            n_layers=footprint.n_layers,
                            slots=footprint.slots,
                            aliases=s.aliases.get(model, []),
                            base=footprint.base,
                        )
                        for model, footprint in s.footprints.items()
                    ],
                )
                for s in arbiter.services.values()
            ],
            total_grants=arbiter.total_grants,
            total_evictions=arbiter.total_evictions,
        )
