"""LeaseArbiter: the scheduler's state (services, resident models, queue, leases) and its one dispatch rule.

Everything runs on one event loop, so each method is atomic and no lock is needed.
"""

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from multai.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    ResourceExhaustedError,
    ServiceUnavailableError,
)
from multai.service_metrics import PoolMetrics, PoolState
from scheduler.memory import DeviceKind, Evict, Footprint, MemoryPlanner, Place, Refuse, ResidentModel
from scheduler.metrics import SchedulerMetrics
from scheduler.queue import LeaseQueue, Level, QueueFullError, Waiter

log = logging.getLogger(__name__)


@dataclass
class RegisteredService:
    """A modality service with an open Register stream."""

    service_id: str
    name: str
    pid: int
    footprints: dict[str, Footprint]
    # Other names of each model, for routers that resolve requests' names as the services do.
    aliases: dict[str, list[str]] = field(default_factory=dict)
    # Unload commands for the Register stream to send, in order.
    unload_commands: asyncio.Queue[str] = field(default_factory=asyncio.Queue)


@dataclass
class Lease:
    """A granted lease; it ends on release, when its stream closes, at its deadline, or with its service."""

    lease_id: str
    fencing_token: int
    request_id: str
    model: str
    service_id: str
    device: DeviceKind
    gpu_layers: int
    granted_at: float
    expires_at: float
    # Renewals never extend a lease past this.
    hard_deadline: float
    # For an adapter's lease: its base model, whose batch the lease is part of.
    base: str = ""
    revoked: asyncio.Event = field(default_factory=asyncio.Event)
    revoke_reason: str = ""
    expiry_timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True)
class LeaseTerms:
    """How long leases last."""

    ttl_seconds: float = 30.0
    max_seconds: float = 900.0


class LeaseArbiter:
    """Grants leases in queue order as memory and device slots allow."""

    def __init__(
        self,
        planner: MemoryPlanner,
        queue: LeaseQueue,
        terms: LeaseTerms = LeaseTerms(),
        metrics: SchedulerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.planner = planner
        self.queue = queue
        self.terms = terms
        self.metrics = metrics or SchedulerMetrics()
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
        self._models_shown: set[str] = set()
        # Bumped by every change of state; watchers wait on the event, which is replaced once set.
        self.version = 0
        self._changed = asyncio.Event()
        for device in planner.devices:
            self.metrics.memory_budget.labels(device.kind.value).set(device.budget_bytes)
        self.metrics.registry.register(PoolMetrics(self.pool_state))

    # Services

    def register(
        self,
        name: str,
        pid: int,
        footprints: dict[str, Footprint],
        resident: dict[str, tuple[DeviceKind, int]],
        aliases: dict[str, list[str]] | None = None,
    ) -> RegisteredService:
        """Adds a service with its models and those it already has loaded."""
        service = RegisteredService(uuid.uuid4().hex[:12], name, pid, footprints, aliases or {})
        self.services[service.service_id] = service
        for model, (device, size) in resident.items():
            self.resident[model] = ResidentModel(
                model,
                service.service_id,
                device,
                size or footprints[model].size_bytes,
                self._clock(),
                loaded=True,
                slots=footprints[model].slots,
                base=footprints[model].base,
            )
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
            self._revoke(lease, f"service {service.name} went away")
        for waiter in [w for w in self._grants if w.service_id == service_id]:
            self._fail(waiter, ServiceUnavailableError(f"service {service.name} went away"))
        log.warning(
            "service %s (pid %d) unregistered; its memory and leases are reclaimed", service.name, service.pid
        )
        self._dispatch()

    def update_catalog(
        self, service_id: str, footprints: dict[str, Footprint], aliases: dict[str, list[str]]
    ) -> None:
        """A service's models changed: new ones can be placed, waiters for removed ones are refused."""
        service = self.services.get(service_id)
        if service is None:
            return
        # What a model really took once loaded stays; only new models take the service's estimate.
        service.footprints = {m: service.footprints.get(m, f) for m, f in footprints.items()}
        service.aliases = aliases
        for waiter in [w for w in self._grants if w.service_id == service_id and w.model not in footprints]:
            self._fail(waiter, ModelNotFoundError(waiter.model))
        log.info("service %s now has %d models", service.name, len(footprints))
        self._dispatch()

    def model_resident(
        self, service_id: str, model: str, device: DeviceKind, measured_bytes: int, load_seconds: float
    ) -> None:
        """A service loaded a model; a measured size replaces the manifest's estimate."""
        entry = self.resident.get(model)
        if entry is None:
            service = self.services.get(service_id)
            footprint = service.footprints.get(model) if service is not None else None
            entry = ResidentModel(
                model,
                service_id,
                device,
                measured_bytes,
                self._clock(),
                slots=footprint.slots if footprint else 1,
                base=footprint.base if footprint else "",
            )
            self.resident[model] = entry
        entry.device = device
        entry.loaded = True
        if load_seconds > 0:
            self.metrics.model_load.labels(model).observe(load_seconds)
        if measured_bytes > 0:
            if entry.cpu_bytes:
                # A split model keeps its GPU/RAM proportion.
                share = entry.size_bytes / (entry.size_bytes + entry.cpu_bytes)
                entry.size_bytes = int(measured_bytes * share)
                entry.cpu_bytes = measured_bytes - entry.size_bytes
            else:
                entry.size_bytes = measured_bytes
            # Later placements of this model use what it really took, not the manifest's estimate.
            service = self.services.get(service_id)
            if service is not None and model in service.footprints:
                old = service.footprints[model]
                service.footprints[model] = replace(old, size_bytes=measured_bytes)
        self._dispatch()

    def model_evicted(self, model: str) -> None:
        """A service unloaded a model (asked to, or after a failed load); its adapters went with it."""
        if self.resident.pop(model, None) is not None:
            log.info("model %s unloaded", model)
        for adapter in [m for m, r in self.resident.items() if r.base == model]:
            del self.resident[adapter]
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
            self.metrics.refusals.labels("queue_full").inc()
            raise ResourceExhaustedError(f"{exc}; retry later") from exc
        self._grants[waiter] = asyncio.get_running_loop().create_future()
        self._dispatch()
        return waiter

    def grant_of(self, waiter: Waiter) -> asyncio.Future[Lease]:
        """The future that resolves when the waiter is granted, or fails when it is refused."""
        return self._grants[waiter]

    def position(self, waiter: Waiter) -> int:
        """The waiter's 0-based place in service order."""
        ordered = self.queue.ordered(self._warm_models())
        return ordered.index(waiter) if waiter in ordered else 0

    def renew(self, lease: Lease) -> float:
        """Extends a lease by the TTL, never past its hard deadline; returns the seconds left."""
        if lease.lease_id not in self.leases:
            raise InvalidRequestError(
                f"lease {lease.lease_id} has ended ({lease.revoke_reason or 'released'})"
            )
        lease.expires_at = min(self._clock() + self.terms.ttl_seconds, lease.hard_deadline)
        self._arm_expiry(lease)
        return lease.expires_at - self._clock()

    def leave(self, waiter: Waiter, lease: Lease | None) -> None:
        """Ends a claim however it ends: cancelled while waiting, or released after a grant."""
        if self.queue.remove(waiter):
            log.info("request %s left the queue", waiter.request_id)
        future = self._grants.pop(waiter, None)
        if future is not None and future.done() and not future.cancelled():
            future.exception()  # retrieved, so asyncio does not warn about a refusal nobody awaited
        if lease is not None and lease.lease_id in self.leases:
            self._end_lease(lease)
        self._dispatch()

    def pool_state(self) -> PoolState:
        """The node's totals as the Inference Extension reads a model server: where a pool's endpoints are
        node pods (k8s/overlays/inference-gateway), their scheduler's port serves them. The scheduler does
        not see KV cells; the share of batch slots in use stands for it (each slot holds one sequence's)."""
        resident = [r for r in self.resident.values() if not r.unloading]
        slots = sum(r.slots for r in resident if not r.base)
        in_use = sum(r.active_leases for r in resident if not r.base)
        waiting = {w.model for w in self.queue.ordered(self._warm_models())}
        return PoolState(
            waiting=sum(self.queue.count(level) for level in Level),
            running=len(self.leases),
            kv_cache_usage=in_use / slots if slots else 0.0,
            running_models=sorted(r.model for r in resident),
            waiting_models=sorted(waiting - {r.model for r in resident}),
            max_models=sum(len(service.footprints) for service in self.services.values()),
        )

    async def changed_since(self, version: int) -> None:
        """Returns once the state is newer than `version` (at once if it already is)."""
        while self.version == version:
            await self._changed.wait()

    # The dispatch rule

    def _warm_models(self) -> set[str]:
        return {m for m, r in self.resident.items() if not r.unloading}

    def _dispatch(self) -> None:
        """Grants from the head of the queue while the planner allows, in queue order, except that a waiter
        may join its model's running batch past waiters for other models that are not more urgent."""
        while ordered := self.queue.ordered(self._warm_models()):
            waiter = ordered[0]
            footprints = self.services[waiter.service_id].footprints
            footprint = footprints[waiter.model]
            decision = self.planner.decide(
                waiter.model, footprint, self.resident, footprints.get(footprint.base)
            )
            match decision:
                case Place():
                    self._grant(waiter, decision)
                    continue
                case Refuse(message=message):
                    self.metrics.refusals.labels("too_large").inc()
                    self._fail(waiter, ResourceExhaustedError(message, param="model"))
                    continue
                case Evict(models=models):
                    for model in models:
                        self._send_unload(model)
            joiner = self._batch_joiner(ordered)
            if joiner is None:
                break
            joined = self.resident[joiner.model]
            entry = self.resident[joined.base] if joined.base else joined
            self._grant(joiner, Place(entry.device, entry.gpu_layers, entry.cpu_bytes))
        self._refresh_gauges()
        # Every change of state ends here, so watchers hear of each one.
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def _batch_joiner(self, ordered: list[Waiter]) -> Waiter | None:
        """The first waiter that may join its model's running batch although the head of the queue waits.

        It may when a slot is free and no waiter for another model stands ahead of it at a more urgent
        effective level; at level 0 any urgent waiter ahead blocks it, as urgent requests are served strictly
        in arrival order (lower levels are bounded by aging). Otherwise the batch drains and the device passes
        to the head of the queue, which then waits only for the streams in flight.
        """
        now = self._clock()
        for index, waiter in enumerate(ordered[1:], start=1):
            if not self.planner.can_join(waiter.model, self.resident):
                continue
            level = self.queue.effective_level(waiter, now)
            batch = self._batch_of(waiter)
            blocked = any(
                self._batch_of(ahead) != batch
                and (
                    (ahead_level := self.queue.effective_level(ahead, now)) < level
                    or ahead_level is Level.URGENT
                )
                for ahead in ordered[:index]
            )
            if not blocked:
                return waiter
        return None

    def _batch_of(self, waiter: Waiter) -> str:
        """The model whose batch a waiter's lease runs in: its own, or an adapter's base."""
        return self.services[waiter.service_id].footprints[waiter.model].base or waiter.model

    def _grant(self, waiter: Waiter, place: Place) -> None:
        self.queue.remove(waiter)
        now = self._clock()
        footprints = self.services[waiter.service_id].footprints
        base = footprints[waiter.model].base
        # An adapter's lease holds its base as well; a base placed for it takes its bytes beside its own.
        for model in (base, waiter.model) if base else (waiter.model,):
            entry = self.resident.get(model)
            if entry is None:
                footprint = footprints[model]
                entry = ResidentModel(
                    model,
                    waiter.service_id,
                    place.device,
                    footprint.size_bytes - (0 if footprint.base else place.cpu_bytes),
                    now,
                    gpu_layers=place.gpu_layers,
                    cpu_bytes=0 if footprint.base else place.cpu_bytes,
                    slots=footprint.slots,
                    base=footprint.base,
                )
                self.resident[model] = entry
            entry.active_leases += 1
            entry.last_used = now
        entry = self.resident[base] if base else self.resident[waiter.model]
        lease = Lease(
            lease_id=uuid.uuid4().hex[:12],
            fencing_token=next(self._fencing),
            request_id=waiter.request_id,
            model=waiter.model,
            service_id=waiter.service_id,
            device=entry.device,
            gpu_layers=entry.gpu_layers,
            granted_at=now,
            expires_at=now + min(self.terms.ttl_seconds, self.terms.max_seconds),
            hard_deadline=now + self.terms.max_seconds,
            base=base,
        )
        self.leases[lease.lease_id] = lease
        self._arm_expiry(lease)
        self.total_grants += 1
        self.metrics.grants.labels(lease.device.value).inc()
        self.metrics.queue_wait.labels(str(int(waiter.level))).observe(now - waiter.enqueued_at)
        future = self._grants.get(waiter)
        if future is not None and not future.done():
            future.set_result(lease)

    def _arm_expiry(self, lease: Lease) -> None:
        if lease.expiry_timer is not None:
            lease.expiry_timer.cancel()
        delay = max(0.0, lease.expires_at - self._clock())
        lease.expiry_timer = asyncio.get_running_loop().call_later(delay, self._expire, lease.lease_id)

    def _expire(self, lease_id: str) -> None:
        lease = self.leases.get(lease_id)
        if lease is None:
            return
        log.warning("lease %s for %s expired without renewal; revoking it", lease_id, lease.model)
        self.metrics.expirations.inc()
        self._revoke(lease, "expired")
        self._dispatch()

    def _revoke(self, lease: Lease, reason: str) -> None:
        lease.revoke_reason = reason
        self._end_lease(lease)
        lease.revoked.set()

    def _end_lease(self, lease: Lease) -> None:
        del self.leases[lease.lease_id]
        if lease.expiry_timer is not None:
            lease.expiry_timer.cancel()
        for model in (lease.model, lease.base) if lease.base else (lease.model,):
            entry = self.resident.get(model)
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
        for adapter in self.resident.values():
            if adapter.base == model:
                adapter.unloading = True  # the service drops them with their base
        self.total_evictions += 1
        self.metrics.evictions.inc()
        log.info("asking service %s to unload %s to make room", entry.service_id, model)
        self.services[entry.service_id].unload_commands.put_nowait(model)

    def _refresh_gauges(self) -> None:
        for level in Level:
            self.metrics.queue_length.labels(str(int(level))).set(self.queue.count(level))
        for device in self.planner.devices:
            kind = device.kind
            self.metrics.memory_used.labels(kind.value).set(self.planner.used_bytes(kind, self.resident))
            self.metrics.active_leases.labels(kind.value).set(self.planner.active_leases(kind, self.resident))
        for entry in self.resident.values():
            self.metrics.slots.labels(entry.model).set(entry.slots)
            self.metrics.slots_in_use.labels(entry.model).set(entry.active_leases)
        for model in self._models_shown - self.resident.keys():
            # An unloaded model serves nothing; keep its series at zero rather than at a stale count.
            self.metrics.slots.labels(model).set(0)
            self.metrics.slots_in_use.labels(model).set(0)
        self._models_shown |= self.resident.keys()
