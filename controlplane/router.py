"""Routing: which pod a user's request goes to, and the table of users Envoy routes itself.

A user's binding is read and written through coalesced Redis calls (one ``HMGET`` for the
lookups and one ``BIND_MANY`` for the binds of an event-loop turn). With Redis unreachable,
users Envoy already routes keep their pod and new users are placed by plain weighted
consistent hashing (every replica agrees); their binds are written when Redis answers again.

A new user is bound only within its service's ``NewUserLimits`` (``admission.py``); past
them it is refused (``NewUsersLimited``) and stays unbound, and bound users are not affected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from redis.exceptions import RedisError

from controlplane.admission import NewUserGate
from controlplane.balancer import BoundedLoadHash
from controlplane.callbacks import ManagerCallbacks, Moves
from controlplane.coalesce import Coalescer
from controlplane.domain import (
    Binding,
    NewUserLimits,
    Pod,
    RouteRequest,
    RouteResult,
    ServiceKey,
    Strategy,
    UsersPage,
    check_uid,
)
from controlplane.domain.placement import sitting_out
from controlplane.domain.sticky import StickyTable
from controlplane.errors import NotBound, StoreUnavailable
from controlplane.service_cache import CachedService, ServiceCache
from controlplane.store import Refusal, ServiceKeys, Store

log = logging.getLogger("stateful_route.manager")

_REPLAY_BATCH = 500
_MAX_PENDING_BINDS = 100_000


class Router:
    """Places users, keeps their last-seen times, and owns the ``StickyTable``."""

    def __init__(
        self,
        store: Store,
        services: ServiceCache,
        callbacks: ManagerCallbacks,
        *,
        route_window_s: float = 600.0,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._services = services
        self._callbacks = callbacks
        self._clock = clock
        # Users Envoy routes by itself (recently seen); the rest reach us through the miss path.
        self.sticky = StickyTable(route_window_s)
        # Users placed while Redis was unreachable, to bind once it answers: uid -> pod.
        self._pending: dict[ServiceKey, dict[str, int]] = {}
        self._seen: dict[ServiceKey, dict[str, float]] = {}
        self.new_users = NewUserGate(clock)
        self._lookup: Coalescer[ServiceKeys, str, int | None] = Coalescer(
            store.bindings.lookup_many
        )
        self._bind: Coalescer[
            tuple[ServiceKeys, NewUserLimits], tuple[str, int], tuple[int, bool] | Refusal
        ] = Coalescer(
            lambda group, wanted: store.bindings.admit_many(
                group[0], wanted, self._clock(), group[1]
            )
        )

    async def route_request(self, request: RouteRequest) -> RouteResult:
        """The pod for this user: its binding while that pod keeps users, else a new pick."""
        key = ServiceKey(request.namespace, request.service_name)
        try:
            return await self._route_request(key, request)
        except RedisError as exc:
            return self._route_without_redis(key, request, exc)

    async def bound_route(self, request: RouteRequest) -> RouteResult | None:
        """The user's pod while that pod keeps it; None if it is unbound or bound to a pod
        that keeps it no more. Nothing is placed: a failed pod's users are its failover's."""
        key = ServiceKey(request.namespace, request.service_name)
        try:
            cached = await self._services.get(key)
            return self._kept(key, cached, request, await self._lookup(cached.keys, request.uid))
        except RedisError as exc:
            raise StoreUnavailable(f"redis is unreachable: {exc}") from exc

    def _kept(
        self, key: ServiceKey, cached: CachedService, request: RouteRequest, bound: int | None
    ) -> RouteResult | None:
        """The route of a user bound to pod ``bound`` while that pod keeps it (the user is seen
        now); None otherwise."""
        pod = cached.pods.get(bound) if bound is not None else None
        now = self._clock()
        if pod is None or not pod.holds_users(now):
            return None
        self._seen.setdefault(key, {})[request.uid] = now
        self.sticky.put(key, request.uid, pod.index, now)
        return _result(pod, request.strategy or cached.service.settings.strategy, new=False)

    async def _route_request(self, key: ServiceKey, request: RouteRequest) -> RouteResult:
        cached = await self._services.get(key)
        strategy = request.strategy or cached.service.settings.strategy
        uid = request.uid
        bound = await self._lookup(cached.keys, uid)
        kept = self._kept(key, cached, request, bound)
        if kept is not None:
            return kept
        if bound is None:
            self.new_users.check(key, cached.service.settings.new_users)
        out = sitting_out(cached.pods, self._clock())
        candidates = [c for c in cached.candidates() if c.index not in out]
        target = cached.balancer(strategy).pick(candidates, uid)
        winner, created = await self._place(cached, uid, bound, target)
        if created:
            cached.users[winner] = cached.users.get(winner, 0) + 1
        pod = cached.pods.get(winner) or (await self._services.get(key, fresh=True)).pod(winner)
        self.sticky.put(key, uid, winner, self._clock())
        return _result(pod, strategy, new=created)

    def _route_without_redis(
        self, key: ServiceKey, request: RouteRequest, error: RedisError
    ) -> RouteResult:
        cached = self._services.last(key)
        if cached is None:
            raise StoreUnavailable(f"redis is unreachable: {error}") from error
        strategy = request.strategy or cached.service.settings.strategy
        uid = request.uid
        known = self.sticky.routes(key).get(uid)
        if known is None:
            known = self._pending.get(key, {}).get(uid)
        pod = cached.pods.get(known) if known is not None else None
        if pod is not None and pod.holds_users(self._clock()):
            return _result(pod, strategy, new=False, degraded=True)
        limits = cached.service.settings.new_users
        if len(self.sticky.routes(key)) >= limits.max_bound_users:
            raise self.new_users.refused(key, limits, Refusal.FULL) from error
        candidates = [replace(c, bound_users=0) for c in cached.candidates()]
        index = BoundedLoadHash(cached.service.settings.hash_balance_factor).pick(candidates, uid)
        pending = self._pending.setdefault(key, {})
        if len(pending) < _MAX_PENDING_BINDS:
            pending[uid] = index
        else:
            log.warning("pending_binds_full service=%s uid_dropped=%s", key, uid)
        self.sticky.put(key, uid, index, self._clock())
        return _result(cached.pods[index], strategy, new=True, degraded=True)

    async def replay_pending_binds(self) -> int:
        """Write the binds made while Redis was away; returns how many were written.

        The first writer still wins: where another replica bound the user meanwhile, its pod
        stands and Envoy's route follows it.
        """
        written = 0
        for key, pending in list(self._pending.items()):
            keys = self._store.keys(key)
            batch = list(pending.items())[:_REPLAY_BATCH]
            outcome = await self._store.bindings.bind_many(keys, batch, self._clock())
            for (uid, wanted), (pod, _) in zip(batch, outcome, strict=True):
                del pending[uid]
                if pod != wanted:
                    self.sticky.put(key, uid, pod, self._clock())
            written += len(batch)
            if not pending:
                del self._pending[key]
            self._services.forget(key)
        return written

    async def _place(
        self, cached: CachedService, uid: str, bound: int | None, target: int
    ) -> tuple[int, bool]:
        """Bind ``uid`` to ``target`` unless another caller placed it first; -> (pod, ours)."""
        if bound is not None:
            # Bound to a pod that keeps no users: move it, unless someone else just did.
            await self._services.raise_epochs(cached, [target])
            now = self._clock()
            if await self._store.bindings.move(cached.keys, [uid], target, now, only_from=bound):
                cached.unbound(bound)
                return target, True
            current = await self.current_pod(cached, uid)
            if current is not None:
                return current, False
        limits = cached.service.settings.new_users
        placed = await self._bind((cached.keys, limits), (uid, target))
        if isinstance(placed, Refusal):
            raise self.new_users.refused(cached.service.key, limits, placed)
        return placed

    async def current_pod(self, cached: CachedService, uid: str) -> int | None:
        """The pod ``uid`` is bound to in Redis now (None if unbound)."""
        binding = await self._store.bindings.get(cached.keys, uid)
        return None if binding is None else binding.pod

    async def get_binding(self, cached: CachedService, uid: str) -> Binding:
        binding = await self._store.bindings.get(cached.keys, check_uid(uid))
        if binding is None:
            raise NotBound(f"user {uid!r} is not bound", uid=uid)
        return binding

    async def unbind_user(self, cached: CachedService, uid: str) -> Binding:
        binding = await self._store.bindings.unbind(cached.keys, check_uid(uid))
        if binding is None:
            raise NotBound(f"user {uid!r} is not bound", uid=uid)
        cached.unbound(binding.pod)
        self.moved(cached.service.key, {uid: None})
        return binding

    async def users_on_pod(
        self, cached: CachedService, index: int, cursor: int, limit: int
    ) -> UsersPage:
        cached.pod(index)
        users, after = await self._store.bindings.users_page(cached.keys, index, cursor, limit)
        return UsersPage(
            pod=index,
            bound_users=cached.users.get(index, 0),
            users=tuple(users),
            next_cursor=after or None,
        )

    def route(self, key: ServiceKey, uid: str, pod: int, now: float) -> None:
        """Keep (or put) the user in Envoy's routes (the table tells xDS of a change)."""
        self.sticky.put(key, uid, pod, now)

    def moved(self, key: ServiceKey, moves: Moves) -> None:
        """Users moved (pod) or were unbound (None): follow here and on the other replicas."""
        self.follow(key, moves)
        self._callbacks.on_users_moved(key, moves)

    def follow(self, key: ServiceKey, moves: Moves) -> None:
        """Point Envoy's routes of these users at their new pods (or drop them)."""
        for uid, pod in moves.items():
            if pod is None:
                self.sticky.remove(key, uid)
            else:
                self.sticky.move(key, [uid], pod)

    # -- upkeep ------------------------------------------------------------------------------

    async def flush_last_seen(self) -> int:
        """Write the last-seen times gathered on the hot path; returns how many."""
        seen, self._seen = self._seen, {}
        total = sum(len(users) for users in seen.values())
        try:
            for key, users in list(seen.items()):
                await self._store.bindings.touch_many(self._store.keys(key), users.items())
                del seen[key]
        finally:
            for key, users in seen.items():  # not written (Redis away): keep for next time
                self._seen[key] = {**users, **self._seen.get(key, {})}
        return total

    async def expire_idle(self) -> int:
        """Forget users idle longer than their service's binding TTL; returns how many."""
        await self.flush_last_seen()
        expired = 0
        for service in await self._services.services():
            keys = self._store.keys(service.key)
            cutoff = self._clock() - service.settings.binding_idle_ttl_s
            while count := await self._store.bindings.expire_idle(keys, cutoff):
                expired += count
            self._services.forget(service.key)
        return expired

    def expire_routes(self) -> int:
        """Drop users not seen within the route window from Envoy's routes; returns services."""
        return len(self.sticky.expire(self._clock()))

    async def load_routes(self) -> int:
        """Fill the route table from Redis (users seen within the window); returns users."""
        since = self._clock() - self.sticky.window_s
        loaded = 0
        for key in await self._store.registry.service_keys():
            keys = self._store.keys(key)
            for uid, pod, seen in await self._store.bindings.seen_since(keys, since):
                self.sticky.put(key, uid, pod, seen)
                loaded += 1
        return loaded

    async def close(self) -> None:
        """Finish the coalesced calls under way and write the last-seen times."""
        await self._lookup.drain()
        await self._bind.drain()
        try:
            await self.flush_last_seen()
        except RedisError as exc:  # shutting down anyway: last-use times are advisory
            log.warning("last_seen_not_flushed error=%r", exc)


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
