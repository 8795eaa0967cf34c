"""The in-memory copy of each service (settings, pods, users per pod), refreshed from Redis.

A copy is at most ``ttl_s`` old unless asked ``fresh``; concurrent loads of one service share
one round trip; with Redis away, the last copy serves reads, routing and xDS. The cache also
says when a service changed: to this replica's xDS server (its subscribers) and, for changes
made here, to the other replicas (``ManagerCallbacks.on_service_changed``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from controlplane.balancer import Balancer, Candidate, make_balancer
from controlplane.callbacks import ManagerCallbacks
from controlplane.domain import (
    Pod,
    Service,
    ServiceKey,
    ServiceState,
    Strategy,
    Thresholds,
    check_pod_index,
)
from controlplane.domain.envoy_settings import ENVOY_MAX_EJECTION_S
from controlplane.errors import UnknownPod, UnknownService
from controlplane.store import ServiceKeys, Store

log = logging.getLogger("stateful_route.manager")

ServiceSubscriber = Callable[[ServiceKey], None]


@dataclass(slots=True)
class CachedService:
    """One service as last read from Redis: its pods and how many users each holds."""

    service: Service
    keys: ServiceKeys
    pods: dict[int, Pod]
    users: dict[int, int]  # bound users per pod
    loaded_at: float
    balancers: dict[Strategy, Balancer] = field(default_factory=dict)

    def pod(self, index: int) -> Pod:
        """Pod ``index``; UnknownPod if the service has none."""
        pod = self.pods.get(check_pod_index(index))
        if pod is None:
            raise UnknownPod(f"pod {index} is not registered in {self.service.key}", pod=index)
        return pod

    def candidates(self, exclude: int | None = None) -> list[Candidate]:
        return [
            Candidate.of(pod, self.users.get(index, 0))
            for index, pod in self.pods.items()
            if index != exclude
        ]

    def balancer(self, strategy: Strategy) -> Balancer:
        balancer = self.balancers.get(strategy)
        if balancer is None:
            factor = self.service.settings.hash_balance_factor
            balancer = self.balancers[strategy] = make_balancer(strategy, balance_factor=factor)
        return balancer

    def unbound(self, index: int) -> None:
        """One user fewer on pod ``index`` (it left or moved)."""
        self.users[index] = max(0, self.users.get(index, 0) - 1)

    @property
    def thresholds(self) -> Thresholds:
        settings = self.service.settings
        check = settings.health_check
        od = settings.envoy.outlier_detection
        return Thresholds(
            healthy=check.healthy_threshold,
            unhealthy=check.unhealthy_threshold,
            max_ejection_s=od.max_ejection_s if od else ENVOY_MAX_EJECTION_S,
            hang_grace_s=settings.failover.hang_grace_s,
            fence_s=settings.failover.fence_s(settings.envoy.route_timeout_s),
        )


class ServiceCache:
    """Services by key, read through from Redis."""

    def __init__(
        self,
        store: Store,
        callbacks: ManagerCallbacks,
        *,
        ttl_s: float = 1.0,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._callbacks = callbacks
        self._ttl_s = ttl_s
        self._clock = clock
        self._services: dict[ServiceKey, CachedService] = {}
        self._loading: dict[ServiceKey, asyncio.Task[CachedService]] = {}
        self._subscribers: list[ServiceSubscriber] = []

    async def get(self, key: ServiceKey, *, fresh: bool = False) -> CachedService:
        """The service, at most ``ttl_s`` old (re-read if ``fresh``); UnknownService if none."""
        cached = self._services.get(key)
        if cached is not None and not fresh and self._clock() - cached.loaded_at < self._ttl_s:
            return cached
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._load(key, cached))
            loading.add_done_callback(lambda done: self._loaded(key, done))
        try:
            return await asyncio.shield(loading)
        except RedisError:
            if cached is None:
                raise
            # Redis away: the last state we saw serves reads, routing and xDS meanwhile.
            log.warning("view_stale service=%s reason=redis_unreachable", key)
            return cached

    def last(self, key: ServiceKey) -> CachedService | None:
        """The last copy read, however old (None if never read): better than no answer."""
        return self._services.get(key)

    def forget(self, key: ServiceKey) -> None:
        """Read the service from Redis again on its next use."""
        self._services.pop(key, None)

    async def services(self) -> list[Service]:
        """Every registered service, from Redis."""
        registry = self._store.registry
        found = [await registry.get_service(key) for key in await registry.service_keys()]
        return [service for service in found if service is not None]

    async def state(self, key: ServiceKey) -> ServiceState | None:
        """The service and its pods as xDS serves them; None once it is removed."""
        try:
            cached = await self.get(key, fresh=True)
        except UnknownService:
            return None
        return ServiceState(cached.service, tuple(pod for _, pod in sorted(cached.pods.items())))

    async def states(self) -> list[ServiceState]:
        keys = await self._store.registry.service_keys()
        states = [await self.state(key) for key in keys]
        return [state for state in states if state is not None]

    # -- changes -----------------------------------------------------------------------------

    def subscribe(self, subscriber: ServiceSubscriber) -> None:
        """Call ``subscriber`` with the key of every service whose settings or pods change,
        here or on another replica."""
        self._subscribers.append(subscriber)

    def changed(self, key: ServiceKey, *, forget: bool = False) -> None:
        """This replica changed the service: rebuild it here, and tell the other replicas."""
        if forget:
            self.forget(key)
        self._tell_subscribers(key)
        self._callbacks.on_service_changed(key)

    async def raise_epochs(self, cached: CachedService, targets: Iterable[int]) -> None:
        """Before users move to ``targets``: give those pods the service's next epoch (if it
        has an epoch header), and say so first, so the xDS server has their routes carry it
        no later than the moved users' scopes name them (docs/architecture.md, the epoch)."""
        if cached.service.settings.failover.epoch_header is None:
            return
        if await self._store.registry.raise_epochs(cached.keys, targets) is not None:
            self.changed(cached.service.key, forget=True)

    def changed_elsewhere(self, key: ServiceKey) -> None:
        """Another replica changed the service."""
        self.forget(key)
        self._tell_subscribers(key)

    def _tell_subscribers(self, key: ServiceKey) -> None:
        for subscriber in self._subscribers:
            subscriber(key)

    def _loaded(self, key: ServiceKey, done: asyncio.Task[CachedService]) -> None:
        self._loading.pop(key, None)
        # Its callers may all have been cancelled (a loop stopping): the error is theirs to
        # see, not asyncio's "exception was never retrieved".
        if not done.cancelled():
            done.exception()

    async def _load(self, key: ServiceKey, previous: CachedService | None) -> CachedService:
        service = await self._store.registry.get_service(key)
        if service is None:
            self._services.pop(key, None)
            raise UnknownService(f"service {key} is not registered", service=str(key))
        keys = self._store.keys(key)
        pods = await self._store.registry.pods(keys)
        users = await self._store.bindings.count_per_pod(keys, pods)
        balancers = previous.balancers if previous and previous.service == service else {}
        cached = CachedService(service, keys, pods, users, self._clock(), balancers)
        self._services[key] = cached
        return cached
