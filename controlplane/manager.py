"""The route manager: the one API that the admin server, the miss path and xDS call.

It keeps an in-memory view of each service (pods and users per pod), refreshed from Redis at
most ``view_ttl_s`` old, and reaches Redis through coalesced calls so that concurrent requests
share round trips. Redis is the source of truth: every decision that must agree across
replicas (who wins a bind, whether a user is still on a failed pod) is made there atomically.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace

from redis.exceptions import RedisError

from controlplane.balancer import Balancer, BoundedLoadHash, Candidate, make_balancer
from controlplane.coalesce import Coalescer
from controlplane.domain import (
    FAILED,
    Binding,
    FailoverEvent,
    FailoverType,
    HealthReport,
    HealthSignal,
    LoadReport,
    Pod,
    PodState,
    PodStatus,
    RouteRequest,
    RouteResult,
    Service,
    ServiceKey,
    ServiceState,
    Strategy,
    Thresholds,
    Transition,
    UsersPage,
    apply_signal,
    check_pod_index,
    check_uid,
)
from controlplane.domain.envoy_settings import ENVOY_MAX_EJECTION_S
from controlplane.domain.models import SAMPLE_SIZE
from controlplane.domain.sticky import StickyTable
from controlplane.errors import (
    InvalidInput,
    NotBound,
    PodNotEligible,
    StoreUnavailable,
    UnknownPod,
    UnknownService,
)
from controlplane.failover import plan_moves, rebalance_quota
from controlplane.store import ServiceKeys, Store

log = logging.getLogger("stateful_route.manager")

ChangeListener = Callable[[ServiceKey], None]
EventListener = Callable[[FailoverEvent], None]
ReplicaListener = Callable[[ServiceKey, dict[str, int | None] | None], None]

_MOVE_BATCH = 500
_MAX_PENDING_BINDS = 100_000
_MAX_FAILOVER_PASSES = 5
# A recovered pod takes no new user for this long while another pod can: the miss path pins a
# new user's first request to its pod, and Envoy honours the pin only once the push that tells
# it the endpoint is serving again has arrived. (Not pods just added: a control plane starting
# registers them one by one, and each leaving the settle in turn would draw every new user.)
_SETTLE_S = 1.0


@dataclass(slots=True)
class _ServiceView:
    service: Service
    keys: ServiceKeys
    pods: dict[int, Pod]
    users: dict[int, int]  # bound users per pod
    loaded_at: float
    balancers: dict[Strategy, Balancer] = field(default_factory=dict)

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

    @property
    def thresholds(self) -> Thresholds:
        check = self.service.settings.health_check
        od = self.service.settings.envoy.outlier_detection
        return Thresholds(
            healthy=check.healthy_threshold,
            unhealthy=check.unhealthy_threshold,
            max_ejection_s=od.max_ejection_s if od else ENVOY_MAX_EJECTION_S,
        )


class StatefulRouteManager:
    """Routes users to pods, tracks pod health and moves users when pods fail or are drained."""

    def __init__(
        self,
        store: Store,
        *,
        view_ttl_s: float = 1.0,
        route_window_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._view_ttl_s = view_ttl_s
        self._clock = clock
        self._views: dict[ServiceKey, _ServiceView] = {}
        # Whether this replica may move users off failed pods (one leader among replicas).
        self.is_leader: Callable[[], bool] = lambda: True
        # Users Envoy routes by itself (recently seen); the rest reach us through the miss path.
        self.sticky = StickyTable(route_window_s)
        self._loading: dict[ServiceKey, asyncio.Task[_ServiceView]] = {}
        self._listeners: list[ChangeListener] = []
        self._event_listeners: list[EventListener] = []
        self._replica_listeners: list[ReplicaListener] = []
        # Users placed while Redis was unreachable, to bind once it answers: uid -> pod.
        self._pending: dict[ServiceKey, dict[str, int]] = {}
        # Pods being drained at a rate: the task moving their users away.
        self._drainers: dict[tuple[ServiceKey, int], asyncio.Task[None]] = {}
        # One evacuation of a pod at a time: the failure that starts one and the periodic
        # reconcile must not split its users between two events.
        self._evacuations: dict[tuple[ServiceKey, int], asyncio.Lock] = {}
        self._seen: dict[ServiceKey, dict[str, float]] = {}
        self._lookup: Coalescer[ServiceKeys, str, int | None] = Coalescer(
            store.bindings.lookup_many
        )
        self._bind: Coalescer[ServiceKeys, tuple[str, int], tuple[int, bool]] = Coalescer(
            lambda keys, wanted: store.bindings.bind_many(keys, wanted, self._clock())
        )

    # -- services and pods -------------------------------------------------------------

    async def register_service(self, service: Service) -> Service:
        """Create or update a service (its settings); pods are registered separately."""
        await self.store.registry.put_service(service)
        self._changed(service.key, forget_view=True)
        return service

    async def delete_service(self, namespace: str, service: str) -> None:
        key = (await self._service_view(namespace, service)).service.key
        await self.store.registry.delete_service(key)
        self.sticky.drop_service(key)
        self._changed(key, forget_view=True)

    async def service(self, key: ServiceKey) -> Service:
        """A registered service (from the in-memory view); UnknownService if there is none."""
        return (await self._view(key)).service

    async def pods(self, key: ServiceKey) -> list[Pod]:
        """A service's pods from the in-memory view (at most ``view_ttl_s`` old)."""
        return list((await self._view(key)).pods.values())

    async def services(self) -> list[Service]:
        found = []
        for key in await self.store.registry.service_keys():
            service = await self.store.registry.get_service(key)
            if service is not None:
                found.append(service)
        return found

    async def upsert_pod(self, namespace: str, service: str, pod: Pod) -> Pod:
        """Register a pod, or change its address and weight (its health is kept)."""
        view = await self._service_view(namespace, service)
        current = view.pods.get(pod.index)
        if current is not None:
            pod = pod.model_copy(update={"health": current.health, "load": current.load})
        elif pod.health.since == 0:
            pod = pod.model_copy(
                update={"health": pod.health.model_copy(update={"since": self._clock()})}
            )
        await self.store.registry.put_pod(view.keys, pod)
        self._changed(view.service.key, forget_view=True)
        return pod

    async def remove_pod(self, namespace: str, service: str, index: int) -> FailoverEvent | None:
        """Remove a pod; its users are moved to the other pods first."""
        view = await self._service_view(namespace, service)
        key = view.service.key
        self._pod(view, index)
        event = None
        if view.users.get(index, 0):
            event = await self._evacuate(view, index, "pod removed", FailoverType.POD_FAILURE)
        await self.store.registry.delete_pod(view.keys, index)
        self._changed(key, forget_view=True)
        return event

    async def report_load(self, namespace: str, service: str, index: int, load: LoadReport) -> None:
        view = await self._service_view(namespace, service)
        self._pod(view, index)
        load = load.model_copy(update={"reported_at": load.reported_at or self._clock()})
        await self.store.registry.put_load(view.keys, index, load)
        view.pods[index] = view.pods[index].model_copy(update={"load": load})

    # -- routing ---------------------------------------------------------------------------

    async def route_request(self, request: RouteRequest) -> RouteResult:
        """The pod for this user: its binding while that pod keeps users, else a new pick.

        With Redis unreachable, users Envoy already routes keep their pod and new users are
        placed by plain weighted consistent hashing (every replica agrees); their binds are
        written when Redis answers again (``replay_pending_binds``).
        """
        key = ServiceKey(request.namespace, request.service_name)
        try:
            return await self._route_request(key, request)
        except RedisError as exc:
            return self._route_without_redis(key, request, exc)

    async def _route_request(self, key: ServiceKey, request: RouteRequest) -> RouteResult:
        view = await self._view(key)
        strategy = request.strategy or view.service.settings.strategy
        uid = request.uid
        bound = await self._lookup(view.keys, uid)
        if bound is not None:
            pod = view.pods.get(bound)
            if pod is not None and pod.keeps_bound_users:
                now = self._clock()
                self._seen.setdefault(key, {})[uid] = now
                self._route(key, uid, bound, now)
                return _result(pod, strategy, new=False)
        target = view.balancer(strategy).pick(self._placeable(view), uid)
        winner, created = await self._place(view, uid, bound, target)
        if created:
            view.users[winner] = view.users.get(winner, 0) + 1
        pod = view.pods.get(winner) or self._pod(await self._view(key, fresh=True), winner)
        self._route(key, uid, winner, self._clock())
        return _result(pod, strategy, new=created)

    def _placeable(self, view: _ServiceView) -> list[Candidate]:
        """The candidates for a new user: pods recovered within ``_SETTLE_S`` sit out while
        another HEALTHY pod can take the user (the strategy then prefers HEALTHY pods over
        SUSPECT ones: a just-recovered pod beats one failing its checks)."""
        candidates = view.candidates()
        now = self._clock()
        settling = {
            index
            for index, pod in view.pods.items()
            if pod.health.recovered_at is not None and now - pod.health.recovered_at < _SETTLE_S
        }
        if not settling:
            return candidates
        settled = [c for c in candidates if c.index not in settling]
        return settled if any(c.preferred for c in settled) else candidates

    def _route_without_redis(
        self, key: ServiceKey, request: RouteRequest, error: RedisError
    ) -> RouteResult:
        view = self._views.get(key)  # however old: better than no answer
        if view is None:
            raise StoreUnavailable(f"redis is unreachable: {error}") from error
        strategy = request.strategy or view.service.settings.strategy
        uid = request.uid
        known = self.sticky.routes(key).get(uid)
        if known is None:
            known = self._pending.get(key, {}).get(uid)
        pod = view.pods.get(known) if known is not None else None
        if pod is not None and pod.keeps_bound_users:
            return _result(pod, strategy, new=False, degraded=True)
        candidates = [replace(c, bound_users=0) for c in view.candidates()]
        index = BoundedLoadHash(view.service.settings.hash_balance_factor).pick(candidates, uid)
        pending = self._pending.setdefault(key, {})
        if len(pending) < _MAX_PENDING_BINDS:
            pending[uid] = index
        else:
            log.warning("pending_binds_full service=%s uid_dropped=%s", key, uid)
        self._route(key, uid, index, self._clock())
        return _result(view.pods[index], strategy, new=True, degraded=True)

    async def replay_pending_binds(self) -> int:
        """Write the binds made while Redis was away; returns how many were written.

        The first writer still wins: where another replica bound the user meanwhile, its pod
        stands and Envoy's route follows it.
        """
        written = 0
        for key, pending in list(self._pending.items()):
            keys = self.store.keys(key)
            batch = list(pending.items())[:_MOVE_BATCH]
            outcome = await self.store.bindings.bind_many(keys, batch, self._clock())
            for (uid, wanted), (pod, _) in zip(batch, outcome, strict=True):
                del pending[uid]
                if pod != wanted:
                    self._route(key, uid, pod, self._clock())
            written += len(batch)
            if not pending:
                del self._pending[key]
            self._views.pop(key, None)
        return written

    async def get_best_pod(
        self, namespace: str, service: str, strategy: Strategy | None = None, uid: str = ""
    ) -> int:
        """The pod the strategy would give a new user now (nothing is bound)."""
        view = await self._service_view(namespace, service)
        chosen = strategy or view.service.settings.strategy
        return view.balancer(chosen).pick(view.candidates(), uid)

    async def get_binding(self, namespace: str, service: str, uid: str) -> Binding:
        view = await self._service_view(namespace, service)
        binding = await self.store.bindings.get(view.keys, check_uid(uid))
        if binding is None:
            raise NotBound(f"user {uid!r} is not bound", uid=uid)
        return binding

    async def unbind_user(self, namespace: str, service: str, uid: str) -> Binding:
        view = await self._service_view(namespace, service)
        binding = await self.store.bindings.unbind(view.keys, check_uid(uid))
        if binding is None:
            raise NotBound(f"user {uid!r} is not bound", uid=uid)
        view.users[binding.pod] = max(0, view.users.get(binding.pod, 0) - 1)
        self._moved(view.service.key, {uid: None})
        return binding

    async def migrate_user(
        self, namespace: str, service: str, uid: str, target: int, reason: str = "operator"
    ) -> Binding:
        """Move one user to pod ``target`` (binding it if it was not bound)."""
        check_uid(uid)
        view = await self._service_view(namespace, service, fresh=True)
        pod = self._pod(view, target)
        if not pod.accepts_new_users:
            raise PodNotEligible(
                f"pod {target} is {pod.state.value} and takes no users", pod=target
            )
        before = await self._current_pod(view, uid)
        now = self._clock()
        if before != target:
            await self.store.bindings.move(view.keys, [uid], target, now, only_from=None)
            if before is not None:
                view.users[before] = max(0, view.users.get(before, 0) - 1)
            view.users[target] = view.users.get(target, 0) + 1
            await self._record(
                view,
                FailoverType.USER_MIGRATED,
                pod=-1 if before is None else before,
                reason=reason,
                users=[uid],
                to_pods={target: 1},
            )
        self._route(view.service.key, uid, target, now)
        self._moved(view.service.key, {uid: target})
        binding = await self.store.bindings.get(view.keys, uid)
        assert binding is not None
        return binding

    # -- health and failover ---------------------------------------------------------------

    async def update_pod_health(
        self, namespace: str, service: str, index: int, report: HealthReport
    ) -> Transition:
        """Feed one health observation into the pod's state machine (and fail over if due)."""
        signal = HealthSignal.CHECK_PASSED if report.is_healthy else HealthSignal.CHECK_FAILED
        transition = await self.signal_pod(namespace, service, index, signal, report.reason)
        if report.response_time_ms is not None:
            await self._fold_response_time(namespace, service, index, report.response_time_ms)
        return transition

    async def signal_pod(
        self, namespace: str, service: str, index: int, signal: HealthSignal, reason: str = ""
    ) -> Transition:
        """Apply a health signal; moves the pod's users when it fails, records what happened."""
        view = await self._service_view(namespace, service)
        key = view.service.key
        self._pod(view, index)
        now = self._clock()
        thresholds = view.thresholds

        def change(pod: Pod) -> tuple[Pod, Transition]:
            transition = apply_signal(pod.health, signal, now, thresholds, reason)
            return pod.model_copy(update={"health": transition.health}), transition

        updated = await self.store.registry.update_pod(view.keys, index, change)
        if updated is None:
            raise UnknownPod(f"pod {index} is not registered", pod=index)
        pod, transition = updated
        view.pods[index] = pod
        if transition.changed:
            log.info(
                "pod_state service=%s pod=%d from=%s to=%s signal=%s reason=%r",
                key, index, transition.before.value, pod.state.value, signal.value, reason,
            )  # fmt: skip
            self._changed(key)
        if transition.failed and self.is_leader():
            await self._evacuate(view, index, reason or signal.value, FailoverType.POD_FAILURE)
        elif transition.failed:
            log.info("failover_left_to_leader service=%s pod=%d", key, index)
        elif transition.recovered:
            await self._record(view, FailoverType.POD_RECOVERY, pod=index, reason=reason)
        elif signal is HealthSignal.DRAIN and transition.changed:
            users = view.users.get(index, 0)
            await self._record(
                view, FailoverType.POD_DRAINED, pod=index, reason=reason, count=users
            )
        return transition

    async def handle_pod_failure(
        self, namespace: str, service: str, index: int, reason: str = "operator"
    ) -> FailoverEvent | None:
        """Mark the pod DOWN and move every user it still holds to eligible pods.

        On a replica that is not the leader, the leader moves them (within its reconcile
        interval) and this returns None.
        """
        transition = await self.signal_pod(namespace, service, index, HealthSignal.FAIL, reason)
        if not self.is_leader():
            return None
        view = await self._service_view(namespace, service, fresh=True)
        if transition.failed or not view.users.get(index, 0):
            return await self._latest_event(view, index) if transition.failed else None
        # Already failed before, but users remain (a move was interrupted): finish the job.
        return await self._evacuate(view, index, reason, FailoverType.POD_FAILURE)

    async def drain_pod(
        self,
        namespace: str,
        service: str,
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
        transition = await self.signal_pod(namespace, service, index, HealthSignal.DRAIN, reason)
        if move_users_per_s is None:
            return transition
        rate = move_users_per_s

        def with_rate(pod: Pod) -> tuple[Pod, bool]:
            if pod.state is not PodState.DRAINING:  # recovered or failed meanwhile
                return pod, False
            health = pod.health.model_copy(update={"drain_rate": rate})
            return pod.model_copy(update={"health": health}), True

        view = await self._service_view(namespace, service)
        updated = await self.store.registry.update_pod(view.keys, index, with_rate)
        if updated is not None and updated[1]:
            transition = replace(transition, health=updated[0].health)
            view.pods[index] = updated[0]
            if self.is_leader():
                self._start_drainer(view.service.key, index, rate)
        return transition

    def _start_drainer(self, key: ServiceKey, index: int, per_second: float) -> None:
        """Move the draining pod's users away at ``per_second`` unless a mover already does."""
        if self._drainers.get((key, index)):
            return
        task = asyncio.create_task(
            self._drain_at_rate(key, index, per_second), name=f"drain-{key}-{index}"
        )
        self._drainers[key, index] = task
        task.add_done_callback(lambda _: self._drainers.pop((key, index), None))

    async def recover_pod(
        self,
        namespace: str,
        service: str,
        index: int,
        *,
        rebalance: bool = False,
        reason: str = "operator",
    ) -> Transition:
        """Make the pod eligible again; with ``rebalance``, move it its fair share of users."""
        transition = await self.signal_pod(namespace, service, index, HealthSignal.RECOVER, reason)
        if rebalance:
            view = await self._service_view(namespace, service, fresh=True)
            await self._rebalance_onto(view, index)
        return transition

    async def get_service_load_status(self, namespace: str, service: str) -> dict[int, PodStatus]:
        view = await self._service_view(namespace, service, fresh=True)
        return {
            index: _status(pod, view.users.get(index, 0))
            for index, pod in sorted(view.pods.items())
        }

    async def get_failover_history(
        self,
        namespace: str,
        service: str,
        limit: int | None = None,
        *,
        pod: int | None = None,
        kind: FailoverType | None = None,
    ) -> list[FailoverEvent]:
        """The kept events, newest first; with ``pod`` or ``kind``, only those of that pod or
        type (``limit`` counts the events that match)."""
        key = (await self._service_view(namespace, service)).service.key
        keys = self.store.keys(key)
        if pod is None and kind is None:
            return await self.store.history.recent(keys, limit)
        matching = [
            event
            for event in await self.store.history.recent(keys)
            if (pod is None or event.pod == pod) and (kind is None or event.type == kind)
        ]
        return matching[:limit]

    async def users_on_pod(
        self, namespace: str, service: str, index: int, *, cursor: int = 0, limit: int = 100
    ) -> UsersPage:
        """A page of the users bound to pod ``index``, resuming at ``cursor`` (see
        BindingStore.users_page: a page may hold more than ``limit``)."""
        view = await self._service_view(namespace, service, fresh=True)
        self._pod(view, index)
        users, after = await self.store.bindings.users_page(view.keys, index, cursor, limit)
        return UsersPage(
            pod=index,
            bound_users=view.users.get(index, 0),
            users=tuple(users),
            next_cursor=after or None,
        )

    # -- state for xDS (controlplane.xds.source.StateSource) ------------------------------

    def add_listener(self, callback: ChangeListener) -> None:
        """Call ``callback`` with the service's key whenever its pods or settings change."""
        self._listeners.append(callback)

    def add_replica_listener(self, callback: ReplicaListener) -> None:
        """Call ``callback`` with what the other replicas must learn: a service that changed
        (moves None) or users that moved (uid -> pod, None when unbound)."""
        self._replica_listeners.append(callback)

    def add_event_listener(self, callback: EventListener) -> None:
        """Call ``callback`` with every failover event as it is recorded."""
        self._event_listeners.append(callback)

    async def service_state(self, key: ServiceKey) -> ServiceState | None:
        try:
            view = await self._view(key, fresh=True)
        except UnknownService:
            return None
        pods = tuple(pod for _, pod in sorted(view.pods.items()))
        return ServiceState(view.service, pods)

    async def service_states(self) -> list[ServiceState]:
        states = [await self.service_state(key) for key in await self.store.registry.service_keys()]
        return [state for state in states if state is not None]

    # -- upkeep ----------------------------------------------------------------------------

    async def flush_last_seen(self) -> int:
        """Write the last-seen times gathered on the hot path; returns how many."""
        seen, self._seen = self._seen, {}
        total = sum(len(users) for users in seen.values())
        try:
            for key, users in list(seen.items()):
                await self.store.bindings.touch_many(self.store.keys(key), users.items())
                del seen[key]
        finally:
            for key, users in seen.items():  # not written (Redis away): keep for next time
                self._seen[key] = {**users, **self._seen.get(key, {})}
        return total

    async def expire_idle(self) -> int:
        """Forget users idle longer than their service's binding TTL; returns how many."""
        await self.flush_last_seen()
        expired = 0
        for service in await self.services():
            keys = self.store.keys(service.key)
            cutoff = self._clock() - service.settings.binding_idle_ttl_s
            while count := await self.store.bindings.expire_idle(keys, cutoff):
                expired += count
            self._views.pop(service.key, None)
        return expired

    async def reconcile(self) -> int:
        """Move the users still bound to failed pods (the leader's job); returns users moved.

        Catches failures another replica saw (it marks the pod, the leader moves its users)
        and moves that a crash interrupted. Also starts the movers of pods drained at a rate
        (through another replica, or before this one led), which run in the background.
        """
        moved = 0
        for key in await self.store.registry.service_keys():
            # At most view_ttl_s old: a service with many replicas costs Redis one read a second.
            view = await self._view(key)
            for index, pod in sorted(view.pods.items()):
                if pod.state in FAILED and view.users.get(index, 0):
                    reason = pod.health.reason or pod.state.value
                    event = await self._evacuate(
                        view, index, reason, FailoverType.POD_FAILURE, leftovers=True
                    )
                    moved += event.affected_users if event else 0
                rate = pod.health.drain_rate
                if pod.state is PodState.DRAINING and rate and view.users.get(index, 0):
                    self._start_drainer(key, index, rate)
        return moved

    def expire_routes(self) -> int:
        """Drop users not seen within the route window from Envoy's routes; returns services."""
        return len(self.sticky.expire(self._clock()))

    async def load_routes(self) -> int:
        """Fill the route table from Redis (users seen within the window); returns users.

        A restarted control plane thus serves Envoy the routes it had before.
        """
        since = self._clock() - self.sticky.window_s
        loaded = 0
        for key in await self.store.registry.service_keys():
            for uid, pod, seen in await self.store.bindings.seen_since(self.store.keys(key), since):
                self.sticky.put(key, uid, pod, seen)
                loaded += 1
        return loaded

    async def close(self) -> None:
        drainers = list(self._drainers.values())
        for task in drainers:
            task.cancel()
        await asyncio.gather(*drainers, return_exceptions=True)
        await self._lookup.drain()
        await self._bind.drain()
        try:
            await self.flush_last_seen()
        except RedisError as exc:  # shutting down anyway: last-use times are advisory
            log.warning("last_seen_not_flushed error=%r", exc)

    # -- internals -------------------------------------------------------------------------

    async def _service_view(
        self, namespace: str, service: str, *, fresh: bool = False
    ) -> _ServiceView:
        """The view of a service named by the caller (names checked; UnknownService if none)."""
        return await self._view(ServiceKey.of(namespace, service), fresh=fresh)

    async def _view(self, key: ServiceKey, *, fresh: bool = False) -> _ServiceView:
        view = self._views.get(key)
        if view is not None and not fresh and self._clock() - view.loaded_at < self._view_ttl_s:
            return view
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._load(key, view))
            loading.add_done_callback(lambda _: self._loading.pop(key, None))
        try:
            return await asyncio.shield(loading)
        except RedisError:
            if view is None:
                raise
            # Redis away: the last state we saw serves reads, routing and xDS meanwhile.
            log.warning("view_stale service=%s reason=redis_unreachable", key)
            return view

    async def _load(self, key: ServiceKey, previous: _ServiceView | None) -> _ServiceView:
        service = await self.store.registry.get_service(key)
        if service is None:
            self._views.pop(key, None)
            raise UnknownService(f"service {key} is not registered", service=str(key))
        keys = self.store.keys(key)
        pods = await self.store.registry.pods(keys)
        users = await self.store.bindings.count_per_pod(keys, pods)
        balancers = previous.balancers if previous and previous.service == service else {}
        view = _ServiceView(service, keys, pods, users, self._clock(), balancers)
        self._views[key] = view
        return view

    def _pod(self, view: _ServiceView, index: int) -> Pod:
        pod = view.pods.get(check_pod_index(index))
        if pod is None:
            raise UnknownPod(f"pod {index} is not registered in {view.service.key}", pod=index)
        return pod

    async def _place(
        self, view: _ServiceView, uid: str, bound: int | None, target: int
    ) -> tuple[int, bool]:
        """Bind ``uid`` to ``target`` unless another caller placed it first; -> (pod, ours)."""
        if bound is not None:
            # Bound to a pod that keeps no users: move it, unless someone else just did.
            now = self._clock()
            if await self.store.bindings.move(view.keys, [uid], target, now, only_from=bound):
                view.users[bound] = max(0, view.users.get(bound, 0) - 1)
                return target, True
            current = await self._current_pod(view, uid)
            if current is not None:
                return current, False
        return await self._bind(view.keys, (uid, target))

    async def _current_pod(self, view: _ServiceView, uid: str) -> int | None:
        binding = await self.store.bindings.get(view.keys, uid)
        return None if binding is None else binding.pod

    async def _evacuate(
        self,
        view: _ServiceView,
        index: int,
        reason: str,
        kind: FailoverType,
        *,
        leftovers: bool = False,
    ) -> FailoverEvent | None:
        """Move every user of pod ``index`` to eligible pods and record one event (with
        ``leftovers``, only if it found users to move: another evacuation may have just run)."""
        lock = self._evacuations.setdefault((view.service.key, index), asyncio.Lock())
        async with lock:
            return await self._evacuate_now(view, index, reason, kind, leftovers)

    async def _evacuate_now(
        self, view: _ServiceView, index: int, reason: str, kind: FailoverType, leftovers: bool
    ) -> FailoverEvent | None:
        moved: dict[int, int] = {}
        sample: list[str] = []
        for _ in range(_MAX_FAILOVER_PASSES):
            view = await self._view(view.service.key, fresh=True)
            if not view.users.get(index, 0):
                break
            candidates = view.candidates(exclude=index)
            if not any(c.eligible for c in candidates):
                # Nowhere to go: users stay bound and are placed afresh on their next request.
                reason = f"{reason}; no eligible pod to move users to"
                break
            users = self.store.bindings.users_of(view.keys, index)
            while batch := [uid async for uid in _take(users, _MOVE_BATCH)]:
                candidates = await self._move_batch(view, index, batch, candidates, moved, sample)
        total = sum(moved.values())
        if leftovers and not total:
            return None
        log.info(
            "failover service=%s pod=%d moved=%d reason=%r", view.service.key, index, total, reason
        )
        self._changed(view.service.key, forget_view=True)
        return await self._record(
            view, kind, pod=index, reason=reason, users=sample, count=total, to_pods=moved
        )

    async def _move_batch(
        self,
        view: _ServiceView,
        index: int,
        batch: list[str],
        candidates: list[Candidate],
        moved: dict[int, int],
        sample: list[str],
    ) -> list[Candidate]:
        """Move ``batch`` off pod ``index`` (those still there), tallying into ``moved`` and
        ``sample``; returns the candidates with their new user counts."""
        plan = plan_moves(batch, candidates, view.service.settings.hash_balance_factor)
        for target, uids in plan.items():
            done = await self.store.bindings.move(
                view.keys, uids, target, self._clock(), only_from=index
            )
            moved[target] = moved.get(target, 0) + len(done)
            sample.extend(done[: SAMPLE_SIZE - len(sample)])
            self._moved(view.service.key, dict.fromkeys(done, target))
        return [
            c
            if c.index not in moved
            else Candidate.of(view.pods[c.index], view.users.get(c.index, 0) + moved[c.index])
            for c in candidates
        ]

    async def _drain_at_rate(self, key: ServiceKey, index: int, per_second: float) -> None:
        """Move a draining pod's users away at ``per_second`` until it is empty (or this
        replica stops leading, or the pod stops draining).

        User k (from 1) moves at start + k / per_second on the monotonic clock: N users take
        N / per_second seconds at any rate, and a late step catches up rather than drifting.
        """
        moved: dict[int, int] = {}
        sample: list[str] = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        done = 0
        view = await self._view(key, fresh=True)
        try:
            while True:
                await asyncio.sleep(max(0.0, start + (done + 1) / per_second - loop.time()))
                view = await self._view(key, fresh=True)
                pod = view.pods.get(index)
                if not self.is_leader() or pod is None or pod.state is not PodState.DRAINING:
                    break
                candidates = view.candidates(exclude=index)
                if not any(c.eligible for c in candidates):
                    break
                due = math.floor((loop.time() - start) * per_second) - done
                users = self.store.bindings.users_of(view.keys, index)
                batch = [uid async for uid in _take(users, min(max(due, 1), _MOVE_BATCH))]
                if not batch:
                    break
                await self._move_batch(view, index, batch, candidates, moved, sample)
                done += len(batch)
        finally:
            if moved:
                total = sum(moved.values())
                await self._record(
                    view, FailoverType.USER_MIGRATED, pod=index, reason="drain",
                    users=sample, count=total, to_pods=moved,
                )  # fmt: skip

    async def _rebalance_onto(self, view: _ServiceView, index: int) -> None:
        quota = rebalance_quota(view.candidates(), index)
        moved = 0
        for source, count in quota.items():
            users = self.store.bindings.users_of(view.keys, source)
            batch = [uid async for uid in _take(users, count)]
            done = await self.store.bindings.move(
                view.keys, batch, index, self._clock(), only_from=source
            )
            self._moved(view.service.key, dict.fromkeys(done, index))
            moved += len(done)
        if moved:
            self._changed(view.service.key, forget_view=True)
            await self._record(
                view,
                FailoverType.USER_MIGRATED,
                pod=-1,
                reason="rebalance",
                count=moved,
                to_pods={index: moved},
            )

    async def _record(
        self,
        view: _ServiceView,
        kind: FailoverType,
        *,
        pod: int,
        reason: str,
        users: Sequence[str] = (),
        count: int | None = None,
        to_pods: dict[int, int] | None = None,
    ) -> FailoverEvent:
        event = FailoverEvent(
            at=self._clock(),
            type=kind,
            namespace=view.service.namespace,
            service=view.service.name,
            pod=pod,
            reason=reason,
            affected_users=len(users) if count is None else count,
            sample=list(users[:SAMPLE_SIZE]),
            to_pods=to_pods or {},
        )
        await self.store.history.record(view.keys, event)
        for listener in self._event_listeners:
            listener(event)
        return event

    async def _latest_event(self, view: _ServiceView, index: int) -> FailoverEvent | None:
        for event in await self.store.history.recent(view.keys, 10):
            if event.pod == index and event.type is FailoverType.POD_FAILURE:
                return event
        return None

    async def _fold_response_time(
        self, namespace: str, service: str, index: int, sample_ms: float
    ) -> None:
        view = await self._view(ServiceKey(namespace, service))
        load = view.pods[index].load
        ewma = (
            sample_ms
            if load.response_time_ms == 0
            else 0.8 * load.response_time_ms + 0.2 * sample_ms
        )
        await self.report_load(
            namespace,
            service,
            index,
            load.model_copy(update={"response_time_ms": ewma, "reported_at": self._clock()}),
        )

    def _route(self, key: ServiceKey, uid: str, pod: int, now: float) -> None:
        """Keep (or put) the user in Envoy's routes (the table tells xDS of a change)."""
        self.sticky.put(key, uid, pod, now)

    def _notify(self, key: ServiceKey) -> None:
        """This replica's xDS must rebuild the service."""
        for listener in self._listeners:
            listener(key)

    def _changed(self, key: ServiceKey, *, forget_view: bool = False) -> None:
        """The service's settings or pods changed: rebuild here and tell the other replicas."""
        if forget_view:
            self._views.pop(key, None)
        self._notify(key)
        for replica in self._replica_listeners:
            replica(key, None)

    def _moved(self, key: ServiceKey, moves: dict[str, int | None]) -> None:
        """Users moved (pod) or were unbound (None): follow here and on the other replicas."""
        self._follow(key, moves)
        for replica in self._replica_listeners:
            replica(key, moves)

    def _follow(self, key: ServiceKey, moves: dict[str, int | None]) -> None:
        for uid, pod in moves.items():
            if pod is None:
                self.sticky.remove(key, uid)
            else:
                self.sticky.move(key, [uid], pod)

    def apply_remote(self, key: ServiceKey, moves: dict[str, int | None] | None) -> None:
        """Another replica changed the service (None) or moved some of its users."""
        if moves is None:
            self._views.pop(key, None)
            self._notify(key)
        else:
            self._follow(key, moves)


async def _take(source: AsyncIterator[str], count: int) -> AsyncIterator[str]:
    """Up to ``count`` items of ``source``, leaving the rest for the next call."""
    for _ in range(count):
        try:
            yield await anext(source)
        except StopAsyncIteration:
            return


def _result(pod: Pod, strategy: Strategy, *, new: bool, degraded: bool = False) -> RouteResult:
    return RouteResult(
        degraded=degraded,
        pod_index=pod.index,
        address=pod.address,
        strategy=strategy,
        load_state=pod.load.load_state,
        new_binding=new,
        health_status=pod.state,
    )


def _status(pod: Pod, users: int) -> PodStatus:
    return PodStatus(
        pod_index=pod.index,
        address=pod.address,
        state=pod.state,
        is_healthy=pod.accepts_new_users,
        weight=pod.weight,
        last_change=pod.health.since,
        reason=pod.health.reason,
        response_time_ms=pod.load.response_time_ms,
        error_count=pod.health.failures,
        load_state=pod.load.load_state,
        active_requests=pod.load.active_requests,
        active_connections=pod.load.active_connections,
        bound_users=users,
    )
