"""LeaseArbiter: the scheduler's state (services, resident models, queue, leases) and its one dispatch rule.

Everything runs on one event loop, so each method is atomic and no lock is needed.
"""

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from multai.errors import InvalidRequestError, ResourceExhaustedError, ServiceUnavailableError
from scheduler.memory import DeviceKind, Evict, MemoryPlanner, Place, Refuse, ResidentModel, Wait
from scheduler.queue import LeaseQueue, Level, QueueFullError, Waiter

log = logging.getLogger(__name__)


@dataclass
class RegisteredService:
    """A modality service with an open Register stream."""

    service_id: str
    name: str
    pid: int
    footprints: dict[str, int]
    # Unload commands for the Register stream to send, in order.
    unload_commands: asyncio.Queue[str] = field(default_factory=asyncio.Queue)


@dataclass
class Lease:
    """A granted lease; it ends when its Acquire stream closes or its service goes away."""

    lease_id: str
    fencing_token: int
    request_id: str
    model: str
    service_id: str
    device: DeviceKind
    gpu_layers: int
    granted_at: float
    revoked: asyncio.Event = field(default_factory=asyncio.Event)


class LeaseArbiter:
    """Grants leases in queue order as memory and device slots allow."""

    def __init__(
        self, planner: MemoryPlanner, queue: LeaseQueue, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.planner = planner
        self.queue = queue
        self._clock = clock
        self.services: dict[str, RegisteredService] = {}
        self.resident: dict[str, ResidentModel] = {}
        self.leases: dict[str, Lease] = {}
        self._grants: dict[Waiter, asyncio.Future[Lease]] = {}
        # Seeded from the wall clock so that tokens keep increasing across scheduler restarts.
        self.fencing_floor = time.time_ns()
        self._fencing = itertools.count(self.fencing_floor)
        self.total_grants = 0
        self.total_evictions = 0

    # Services

    def register(
        self, name: str, pid: int, footprints: dict[str, int], resident: dict[str, tuple[DeviceKind, int]]
    ) -> RegisteredService:
        """Adds a service with its models and those it already has loaded."""
        service = RegisteredService(uuid.uuid4().hex[:12], name, pid, footprints)
        self.services[service.service_id] = service
        for model, (device, size) in resident.items():
            self.resident[model] = ResidentModel(model, service.service_id, device, size, self._clock())
        log.info("service %s (pid %d) registered %d models", name, pid, len(footprints))
        self._dispatch()
        return service

    def unregister(self, service_id: str) -> None:
        """Forgets a service that went away: its memory is reclaimed, its leases and waiters end."""
        service = self.services.pop(service_id, None)
        if service is None:
            return
        for model in [m for m, r in self.resident.items() if r.service_id == service_id]:
            del self.resident[model]
        for lease in [lease for lease in self.leases.values() if lease.service_id == service_id]:
            self._end_lease(lease)
            lease.revoked.set()
        for waiter in [w for w in self._grants if w.service_id == service_id]:
            self._fail(waiter, ServiceUnavailableError(f"service {service.name} went away"))
        log.warning(
            "service %s (pid %d) unregistered; its memory and leases are reclaimed", service.name, service.pid
        )
        self._dispatch()

    def model_resident(self, service_id: str, model: str, device: DeviceKind, measured_bytes: int) -> None:
        """A service loaded a model; a measured size replaces the manifest's estimate."""
        entry = self.resident.get(model)
        if entry is None:
            entry = ResidentModel(model, service_id, device, measured_bytes, self._clock())
            self.resident[model] = entry
        entry.device = device
        if measured_bytes > 0:
            entry.size_bytes = measured_bytes
            # Later placements of this model use what it really took, not the manifest's estimate.
            service = self.services.get(service_id)
            if service is not None and model in service.footprints:
                service.footprints[model] = measured_bytes
        self._dispatch()

    def model_evicted(self, model: str) -> None:
        """A service unloaded a model (asked to, or after a failed load)."""
        if self.resident.pop(model, None) is not None:
            log.info("model %s unloaded", model)
        self._dispatch()

    # Leases

    def enqueue(self, service_id: str, request_id: str, model: str, level: Level) -> Waiter:
        """Queues a claim; raises at once if the claim can never be served."""
        service = self.services.get(service_id)
        if service is None:
            raise ServiceUnavailableError(f"service {service_id} is not registered; register first")
        if model not in service.footprints:
            raise InvalidRequestError(f"service {service.name} did not register model {model}", param="model")
        waiter = Waiter(request_id, model, level, service_id, self._clock())
        try:
            self.queue.push(waiter)
        except QueueFullError as exc:
            raise ResourceExhaustedError(f"{exc}; retry later") from exc
        self._grants[waiter] = asyncio.get_running_loop().create_future()
        self._dispatch()
        return waiter

    async def wait_for_grant(self, waiter: Waiter) -> Lease:
        """Resolves when the waiter is granted; raises if it is refused."""
        return await self._grants[waiter]

    def position(self, waiter: Waiter) -> int:
        """The waiter's 0-based place in service order."""
        ordered = self.queue.ordered(self._warm_models())
        return ordered.index(waiter) if waiter in ordered else 0

    def leave(self, waiter: Waiter, lease: Lease | None) -> None:
        """Ends a claim however it ends: cancelled while waiting, or released after a grant."""
        if self.queue.remove(waiter):
            log.info("request %s left the queue", waiter.request_id)
        self._grants.pop(waiter, None)
        if lease is not None and lease.lease_id in self.leases:
            self._end_lease(lease)
        self._dispatch()

    # The dispatch rule

    def _warm_models(self) -> set[str]:
        return {m for m, r in self.resident.items() if not r.unloading}

    def _dispatch(self) -> None:
        """Grants from the head of the queue while the planner allows; strictly in queue order."""
        while (waiter := self.queue.peek(self._warm_models())) is not None:
            service = self.services[waiter.service_id]
            decision = self.planner.decide(waiter.model, service.footprints[waiter.model], self.resident)
            match decision:
                case Place(device=device, gpu_layers=gpu_layers):
                    self._grant(waiter, device, gpu_layers)
                case Evict(models=models):
                    for model in models:
                        self._send_unload(model)
                    return
                case Wait():
                    return
                case Refuse(message=message):
                    self._fail(waiter, ResourceExhaustedError(message, param="model"))

    def _grant(self, waiter: Waiter, device: DeviceKind, gpu_layers: int) -> None:
        self.queue.remove(waiter)
        now = self._clock()
        entry = self.resident.get(waiter.model)
        if entry is None:
            size = self.services[waiter.service_id].footprints[waiter.model]
            entry = ResidentModel(waiter.model, waiter.service_id, device, size, now)
            self.resident[waiter.model] = entry
        entry.active_leases += 1
        entry.last_used = now
        lease = Lease(
            uuid.uuid4().hex[:12],
            next(self._fencing),
            waiter.request_id,
            waiter.model,
            waiter.service_id,
            entry.device,
            gpu_layers,
            now,
        )
        self.leases[lease.lease_id] = lease
        self.total_grants += 1
        future = self._grants.get(waiter)
        if future is not None and not future.done():
            future.set_result(lease)

    def _end_lease(self, lease: Lease) -> None:
        del self.leases[lease.lease_id]
        entry = self.resident.get(lease.model)
        if entry is not None:
            entry.active_leases = max(0, entry.active_leases - 1)
            entry.last_used = self._clock()

    def _fail(self, waiter: Waiter, error: Exception) -> None:
        self.queue.remove(waiter)
        future = self._grants.get(waiter)
        if future is not None and not future.done():
            future.set_exception(error)

    def _send_unload(self, model: str) -> None:
        entry = self.resident[model]
        if entry.unloading:
            return
        entry.unloading = True
        self.total_evictions += 1
        log.info("asking service %s to unload %s to make room", entry.service_id, model)
        self.services[entry.service_id].unload_commands.put_nowait(model)
