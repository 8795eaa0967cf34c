"""The route manager: the one API that the admin server, the miss path and xDS call.

A facade over three parts, each of one noun: ``ServiceCache`` (the in-memory copy of each
service, at most ``view_ttl_s`` old), ``Router`` (users' bindings, the degraded mode without
Redis, the ``StickyTable`` Envoy routes by) and ``FailoverExecutor`` (moves users off failed
and draining pods as the pure ``failover.plan`` says). Redis is the source of truth: every
decision that must agree across replicas (who wins a bind, whether a user is still on a
failed pod) is made there atomically. What the manager tells the rest of the process goes
through one ``ManagerCallbacks``, given to the constructor (``server.py`` wires it). Pods
given by DNS name get their addresses through ``PodAddresses`` (``pod_addresses.py``); pods that
register themselves hold leases (``PodLeases``, ``pod_leases.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from controlplane.callbacks import CallbackFuncs, ManagerCallbacks, Moves
from controlplane.discovery.resolver import Resolver, SystemResolver
from controlplane.domain import (
    Binding,
    FailoverEvent,
    FailoverType,
    HealthReport,
    HealthSignal,
    LoadReport,
    Pod,
    PodStatus,
    RouteRequest,
    RouteResult,
    Service,
    ServiceKey,
    ServiceState,
    Strategy,
    Transition,
    UsersPage,
    check_uid,
)
from controlplane.errors import Conflict, InvalidInput
from controlplane.failover.executor import FailoverExecutor
from controlplane.pod_addresses import PodAddresses
from controlplane.pod_health import PodHealthKeeper
from controlplane.pod_leases import PodLeases
from controlplane.router import Router
from controlplane.service_cache import ServiceCache, ServiceSubscriber
from controlplane.store import Store

log = logging.getLogger("stateful_route.manager")


def _always() -> bool:
    return True


class StatefulRouteManager:
    """Routes users to pods, tracks pod health and moves users when pods fail or are drained.

    ``is_leader`` says whether this replica may move users off failed pods (one leader among
    replicas; always, for a lone manager); ``callbacks`` hears of changes the other replicas
    must learn and of every failover event recorded; ``resolver`` finds the addresses of pods
    given by name (the system's, IPv4, by default); a pod whose lease lapsed is drained, then
    failed ``lease_drain_s`` later.
    """

    def __init__(
        self,
        store: Store,
        *,
        view_ttl_s: float = 1.0,
        route_window_s: float = 600.0,
        clock: Callable[[], float] = time.time,
        callbacks: ManagerCallbacks | None = None,
        is_leader: Callable[[], bool] = _always,
        resolver: Resolver | None = None,
        lease_drain_s: float = 10.0,
    ) -> None:
        self.store = store
        self._clock = clock
        callbacks = callbacks or CallbackFuncs()
        self.services_cache = ServiceCache(store, callbacks, ttl_s=view_ttl_s, clock=clock)
        self.router = Router(
            store, self.services_cache, callbacks, route_window_s=route_window_s, clock=clock
        )
        self.failover = FailoverExecutor(
            store, self.services_cache, self.router, callbacks, is_leader=is_leader, clock=clock
        )
        self.health = PodHealthKeeper(store, self.services_cache, self.failover, clock=clock)
        # Pods given by name: ``addresses.apply`` moves one as a new answer for its name says.
        self.addresses = PodAddresses(
            store, self.services_cache, self.health, resolver or SystemResolver(), clock=clock
        )
        # Pods registering themselves: ``leases.register``, ``release``, ``check_all``.
        self.leases = PodLeases(
            store,
            self.services_cache,
            self.addresses,
            self.health,
            drain_s=lease_drain_s,
            clock=clock,
        )
        # Users Envoy routes by itself (the xDS server's StateSource reads it).
        self.sticky = self.router.sticky
        self.is_leader = is_leader
        self._services = self.services_cache

    # -- services and pods -------------------------------------------------------------

    async def register_service(self, service: Service) -> Service:
        """Create or update a service (its settings); pods are registered separately."""
        await self.store.registry.put_service(service)
        self._services.changed(service.key, forget=True)
        return service

    async def delete_service(self, key: ServiceKey) -> None:
        await self._services.get(key)  # UnknownService if there is none
        await self.store.registry.delete_service(key)
        self.sticky.drop_service(key)
        self._services.changed(key, forget=True)

    async def service(self, key: ServiceKey) -> Service:
        """A registered service (from the in-memory copy); UnknownService if there is none."""
        return (await self._services.get(key)).service

    async def pods(self, key: ServiceKey) -> list[Pod]:
        """A service's pods from the in-memory copy (at most ``view_ttl_s`` old)."""
        return list((await self._services.get(key)).pods.values())

    async def services(self) -> list[Service]:
        return await self._services.services()

    async def upsert_pod(self, key: ServiceKey, pod: Pod) -> Pod:
        """Register a pod, or change its address, name, port or weight (its health is kept).

        A pod given by name is resolved now: registered down (with the reason) if its name
        does not resolve, failed if a known pod's name no longer does.
        """
        return await self.addresses.register(await self._services.get(key), pod)

    async def remove_pod(self, key: ServiceKey, index: int) -> FailoverEvent | None:
        """Remove a pod; its users are moved to the other pods first."""
        cached = await self._services.get(key)
        cached.pod(index)
        event = None
        if cached.users.get(index, 0):
            event = await self.failover.evacuate(cached, index, "pod removed")
        await self.store.registry.delete_pod(cached.keys, index)
        self._services.changed(cached.service.key, forget=True)
        return event

    async def report_load(self, key: ServiceKey, index: int, load: LoadReport) -> None:
        cached = await self._services.get(key)
        pod = cached.pod(index)
        update: dict[str, object] = {"reported_at": load.reported_at or self._clock()}
        if load.requests_total is None:  # one reporter counts requests (Envoy), another not
            update["requests_total"] = pod.load.requests_total
        load = load.model_copy(update=update)
        await self.store.registry.put_load(cached.keys, index, load)
        cached.pods[index] = cached.pods[index].model_copy(update={"load": load})

    # -- users -------------------------------------------------------------------------------

    async def route_request(self, request: RouteRequest) -> RouteResult:
        """The pod for this user: its binding while that pod keeps users, else a new pick.

        With Redis unreachable, users Envoy already routes keep their pod and new users are
        placed by plain weighted consistent hashing (every replica agrees); their binds are
        written when Redis answers again (``replay_pending_binds``).
        """
        return await self.router.route_request(request)

    async def bound_route(self, request: RouteRequest) -> RouteResult | None:
        """The user's pod while that pod keeps it, else None; nothing is placed."""
        return await self.router.bound_route(request)

    async def get_best_pod(
        self, key: ServiceKey, strategy: Strategy | None = None, uid: str = ""
    ) -> int:
        """The pod the strategy would give a new user now (nothing is bound)."""
        cached = await self._services.get(key)
        chosen = strategy or cached.service.settings.strategy
        return cached.balancer(chosen).pick(cached.candidates(), uid)

    async def get_binding(self, key: ServiceKey, uid: str) -> Binding:
        return await self.router.get_binding(await self._services.get(key), uid)

    async def unbind_user(self, key: ServiceKey, uid: str) -> Binding:
        return await self.router.unbind_user(await self._services.get(key), uid)

    async def migrate_user(
        self, key: ServiceKey, uid: str, target: int, reason: str = "operator"
    ) -> Binding:
        """Move one user to pod ``target`` (binding it if it was not bound)."""
        check_uid(uid)
        cached = await self._services.get(key, fresh=True)
        return await self.failover.migrate_user(cached, uid, target, reason)

    async def users_on_pod(
        self, key: ServiceKey, index: int, *, cursor: int = 0, limit: int = 100
    ) -> UsersPage:
        """A page of the users bound to pod ``index``, resuming at ``cursor`` (see
        BindingStore.users_page: a page may hold more than ``limit``)."""
        cached = await self._services.get(key, fresh=True)
        return await self.router.users_on_pod(cached, index, cursor, limit)

    # -- health and failover ---------------------------------------------------------------

    async def update_pod_health(
        self, key: ServiceKey, index: int, report: HealthReport
    ) -> Transition:
        """Feed one health observation into the pod's state machine (and fail over if due)."""
        signal = HealthSignal.CHECK_PASSED
        if not report.is_healthy:
            signal = HealthSignal.CHECK_TIMED_OUT if report.timed_out else HealthSignal.CHECK_FAILED
        transition = await self.signal_pod(key, index, signal, report.reason)
        if report.response_time_ms is not None:
            load = (await self._services.get(key)).pods[index].load
            sample = report.response_time_ms
            await self.report_load(key, index, load.with_response_time(sample, self._clock()))
        return transition

    async def signal_pod(
        self, key: ServiceKey, index: int, signal: HealthSignal, reason: str = ""
    ) -> Transition:
        """Apply a health signal; moves the pod's users when it fails, records what happened."""
        return (await self._signal_pod(key, index, signal, reason))[0]

    async def _signal_pod(
        self, key: ServiceKey, index: int, signal: HealthSignal, reason: str
    ) -> tuple[Transition, FailoverEvent | None]:
        cached = await self._services.get(key)
        return await self.health.signal(cached, index, signal, reason)

    async def handle_pod_failure(
        self, key: ServiceKey, index: int, reason: str = "operator"
    ) -> FailoverEvent | None:
        """Mark the pod DOWN and move every user it still holds to eligible pods.

        On a replica that is not the leader, the leader moves them (within its reconcile
        interval) and this returns None.
        """
        transition, event = await self._signal_pod(key, index, HealthSignal.FAIL, reason)
        if not self.is_leader():
            return None
        if transition.failed:
            return event
        cached = await self._services.get(key, fresh=True)
        if not cached.users.get(index, 0):
            return None
        # Already failed before, but users remain (a move was interrupted): finish the job.
        return await self.failover.evacuate(cached, index, reason)

    async def drain_pod(
        self,
        key: ServiceKey,
        index: int,
        reason: str = "operator",
        *,
        move_users_per_s: float | None = None,
    ) -> Transition:
        """No new users for the pod. Its bound users stay until idle, or, with
        ``move_users_per_s``, move to other pods at that rate in the background.

        The rate is kept with the pod's health, and only the leader moves the users: at once
        if it is this replica, else from its next ``reconcile`` (also after a leader change).
        """
        if move_users_per_s is not None and not move_users_per_s > 0:
            raise InvalidInput("move_users_per_s must be above 0", field="move_users_per_s")
        transition = await self.signal_pod(key, index, HealthSignal.DRAIN, reason)
        if move_users_per_s is None:
            return transition
        cached = await self._services.get(key)
        return await self.health.drain_at_rate(cached, index, move_users_per_s, transition)

    async def recover_pod(
        self,
        key: ServiceKey,
        index: int,
        *,
        rebalance: bool = False,
        reason: str = "operator",
    ) -> Transition:
        """Make the pod eligible again; with ``rebalance``, move it its fair share of users."""
        pod = (await self._services.get(key)).pod(index)
        if pod.host is None:
            raise Conflict(
                f"pod {index} has no address: its name {pod.name} does not resolve", pod=index
            )
        transition = await self.signal_pod(key, index, HealthSignal.RECOVER, reason)
        if rebalance:
            cached = await self._services.get(key, fresh=True)
            await self.failover.rebalance_onto(cached, index)
        return transition

    async def get_service_load_status(self, key: ServiceKey) -> dict[int, PodStatus]:
        cached = await self._services.get(key, fresh=True)
        return {
            index: PodStatus.of(pod, cached.users.get(index, 0))
            for index, pod in sorted(cached.pods.items())
        }

    async def get_failover_history(
        self,
        key: ServiceKey,
        limit: int | None = None,
        *,
        pod: int | None = None,
        kind: FailoverType | None = None,
    ) -> list[FailoverEvent]:
        """The kept events, newest first; with ``pod`` or ``kind``, only those of that pod or
        type (``limit`` counts the events that match)."""
        keys = (await self._services.get(key)).keys
        return await self.store.history.recent(keys, limit, pod=pod, kind=kind)

    # -- state for xDS (controlplane.xds.source.StateSource) ------------------------------

    def subscribe(self, subscriber: ServiceSubscriber) -> None:
        """Call ``subscriber`` with the service's key whenever its pods or settings change
        (here or on another replica)."""
        self._services.subscribe(subscriber)

    async def service_state(self, key: ServiceKey) -> ServiceState | None:
        return await self._services.state(key)

    async def service_states(self) -> list[ServiceState]:
        return await self._services.states()

    def apply_remote(self, key: ServiceKey, moves: Moves | None) -> None:
        """Another replica changed the service (None) or moved some of its users."""
        if moves is None:
            self._services.changed_elsewhere(key)
        else:
            self.router.follow(key, moves)

    # Upkeep jobs (server.py runs them) call the parts themselves: ``router.flush_last_seen``,
    # ``expire_idle``, ``expire_routes``, ``load_routes``, ``replay_pending_binds``, and the
    # leader's ``failover.reconcile``.

    async def close(self) -> None:
        await self.failover.close()
        await self.router.close()
