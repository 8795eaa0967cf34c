"""The failover executor: moves users as ``plan`` says and records one event per move.

Redis decides every race: the ``MOVE`` script moves a user only from the pod it is asked to
move it from, so a failover run twice (here, by a reconcile, or by another replica) moves
nobody twice. Only the leader replica moves users off failed or draining pods.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence

from controlplane.balancer import Candidate
from controlplane.callbacks import ManagerCallbacks
from controlplane.domain import (
    Binding,
    FailoverEvent,
    FailoverType,
    HealthSignal,
    PodState,
    ServiceKey,
    Transition,
)
from controlplane.domain.models import SAMPLE_SIZE
from controlplane.errors import PodNotEligible
from controlplane.failover.fence import Fences
from controlplane.failover.plan import plan_moves, rebalance_quota
from controlplane.router import Router
from controlplane.service_cache import CachedService, ServiceCache
from controlplane.store import Store
from controlplane.tasks import cancel_all

log = logging.getLogger("stateful_route.manager")

_MOVE_BATCH = 500
_MAX_FAILOVER_PASSES = 5


class FailoverExecutor:
    """Evacuates failed pods, drains pods at a rate, migrates and rebalances users."""

    def __init__(
        self,
        store: Store,
        services: ServiceCache,
        router: Router,
        callbacks: ManagerCallbacks,
        *,
        is_leader: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._services = services
        self._router = router
        self._callbacks = callbacks
        # Whether this replica may move users off failed pods (one leader among replicas).
        self.is_leader = is_leader
        self._clock = clock
        # Pods being drained at a rate: the task moving their users away.
        self._drainers: dict[tuple[ServiceKey, int], asyncio.Task[None]] = {}
        # One evacuation of a pod at a time: the failure that starts one and the periodic
        # reconcile must not split its users between two events.
        self._evacuations: dict[tuple[ServiceKey, int], asyncio.Lock] = {}
        # Hung pods that failed: evacuated when their fence ends.
        self.fences = Fences(services, self.evacuate, is_leader=is_leader, clock=clock)

    async def after_transition(
        self,
        cached: CachedService,
        index: int,
        signal: HealthSignal,
        transition: Transition,
        reason: str,
    ) -> FailoverEvent | None:
        """Act on pod ``index``'s new health: move its users if it failed (on the leader),
        record a recovery or a drain. Returns the event recorded, if any."""
        key = cached.service.key
        fence = transition.health.fenced_until
        if transition.failed and self.is_leader() and fence is not None and fence > self._clock():
            self.fences.start(key, index, reason or signal.value, fence)
            return None
        if transition.failed and self.is_leader():
            return await self.evacuate(cached, index, reason or signal.value)
        if transition.failed:
            log.info("failover_left_to_leader service=%s pod=%d", key, index)
        elif transition.recovered:
            return await self.record(cached, FailoverType.POD_RECOVERY, pod=index, reason=reason)
        elif signal is HealthSignal.DRAIN and transition.changed:
            users = cached.users.get(index, 0)
            return await self.record(
                cached, FailoverType.POD_DRAINED, pod=index, reason=reason, count=users
            )
        return None

    async def evacuate(
        self,
        cached: CachedService,
        index: int,
        reason: str,
        kind: FailoverType = FailoverType.POD_FAILURE,
        *,
        leftovers: bool = False,
    ) -> FailoverEvent | None:
        """Move every user of pod ``index`` to eligible pods and record one event (with
        ``leftovers``, only if it found users to move: another evacuation may have just run)."""
        lock = self._evacuations.setdefault((cached.service.key, index), asyncio.Lock())
        async with lock:
            return await self._evacuate_now(cached.service.key, index, reason, kind, leftovers)

    async def _evacuate_now(
        self, key: ServiceKey, index: int, reason: str, kind: FailoverType, leftovers: bool
    ) -> FailoverEvent | None:
        moved: dict[int, int] = {}
        sample: list[str] = []
        for _ in range(_MAX_FAILOVER_PASSES):
            cached = await self._services.get(key, fresh=True)
            if not cached.users.get(index, 0):
                break
            candidates = cached.candidates(exclude=index)
            if not any(c.eligible for c in candidates):
                # Nowhere to go: users stay bound and are placed afresh on their next request.
                reason = f"{reason}; no eligible pod to move users to"
                break
            users = self._store.bindings.users_of(cached.keys, index)
            while batch := [uid async for uid in _take(users, _MOVE_BATCH)]:
                candidates = await self._move_batch(cached, index, batch, candidates, moved, sample)
        total = sum(moved.values())
        if leftovers and not total:
            return None
        log.info("failover service=%s pod=%d moved=%d reason=%r", key, index, total, reason)
        self._services.changed(key, forget=True)
        return await self.record(
            cached, kind, pod=index, reason=reason, users=sample, count=total, to_pods=moved
        )

    async def _move_batch(
        self,
        cached: CachedService,
        index: int,
        batch: list[str],
        candidates: list[Candidate],
        moved: dict[int, int],
        sample: list[str],
    ) -> list[Candidate]:
        """Move ``batch`` off pod ``index`` (those still there), tallying into ``moved`` and
        ``sample``; returns the candidates with their new user counts."""
        plan = plan_moves(batch, candidates, cached.service.settings.hash_balance_factor)
        await self._services.raise_epochs(cached, plan)
        for target, uids in plan.items():
            done = await self._store.bindings.move(
                cached.keys, uids, target, self._clock(), only_from=index
            )
            moved[target] = moved.get(target, 0) + len(done)
            sample.extend(done[: SAMPLE_SIZE - len(sample)])
            self._router.moved(cached.service.key, dict.fromkeys(done, target))
        return [
            c
            if c.index not in moved
            else Candidate.of(cached.pods[c.index], cached.users.get(c.index, 0) + moved[c.index])
            for c in candidates
        ]

    async def migrate_user(
        self, cached: CachedService, uid: str, target: int, reason: str
    ) -> Binding:
        """Move one user to pod ``target`` (binding it if it was not bound)."""
        pod = cached.pod(target)
        if not pod.accepts_new_users:
            raise PodNotEligible(
                f"pod {target} is {pod.state.value} and takes no users", pod=target
            )
        before = await self._router.current_pod(cached, uid)
        now = self._clock()
        if before != target:
            await self._services.raise_epochs(cached, [target])
            await self._store.bindings.move(cached.keys, [uid], target, now, only_from=None)
            if before is not None:
                cached.unbound(before)
            cached.users[target] = cached.users.get(target, 0) + 1
            await self.record(
                cached,
                FailoverType.USER_MIGRATED,
                pod=-1 if before is None else before,
                reason=reason,
                users=[uid],
                to_pods={target: 1},
            )
        key = cached.service.key
        self._router.route(key, uid, target, now)
        self._router.moved(key, {uid: target})
        binding = await self._store.bindings.get(cached.keys, uid)
        assert binding is not None
        return binding

    def start_drainer(self, key: ServiceKey, index: int, per_second: float) -> None:
        """Move the draining pod's users away at ``per_second`` unless a mover already does."""
        if self._drainers.get((key, index)):
            return
        task = asyncio.create_task(
            self._drain_at_rate(key, index, per_second), name=f"drain-{key}-{index}"
        )
        self._drainers[key, index] = task
        task.add_done_callback(lambda _: self._drainers.pop((key, index), None))

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
        cached = await self._services.get(key, fresh=True)
        try:
            while True:
                await asyncio.sleep(max(0.0, start + (done + 1) / per_second - loop.time()))
                cached = await self._services.get(key, fresh=True)
                pod = cached.pods.get(index)
                if not self.is_leader() or pod is None or pod.state is not PodState.DRAINING:
                    break
                candidates = cached.candidates(exclude=index)
                if not any(c.eligible for c in candidates):
                    break
                due = math.floor((loop.time() - start) * per_second) - done
                users = self._store.bindings.users_of(cached.keys, index)
                batch = [uid async for uid in _take(users, min(max(due, 1), _MOVE_BATCH))]
                if not batch:
                    break
                await self._move_batch(cached, index, batch, candidates, moved, sample)
                done += len(batch)
        finally:
            if moved:
                total = sum(moved.values())
                await self.record(
                    cached, FailoverType.USER_MIGRATED, pod=index, reason="drain",
                    users=sample, count=total, to_pods=moved,
                )  # fmt: skip

    async def rebalance_onto(self, cached: CachedService, index: int) -> None:
        """Move pod ``index`` its fair share of the other pods' users."""
        quota = rebalance_quota(cached.candidates(), index)
        key = cached.service.key
        moved = 0
        if quota:
            await self._services.raise_epochs(cached, [index])
        for source, count in quota.items():
            users = self._store.bindings.users_of(cached.keys, source)
            batch = [uid async for uid in _take(users, count)]
            done = await self._store.bindings.move(
                cached.keys, batch, index, self._clock(), only_from=source
            )
            self._router.moved(key, dict.fromkeys(done, index))
            moved += len(done)
        if moved:
            self._services.changed(key, forget=True)
            await self.record(
                cached,
                FailoverType.USER_MIGRATED,
                pod=-1,
                reason="rebalance",
                count=moved,
                to_pods={index: moved},
            )

    async def reconcile(self) -> int:
        """Move the users still bound to pods without a label (failed, or hung and resumed
        during their fence), once fences have ended (the leader's job); returns users moved.

        Catches failures another replica saw (it marks the pod, the leader moves its users)
        and moves that a crash interrupted. Also starts the movers of pods drained at a rate
        (through another replica, or before this one led), which run in the background.
        """
        moved = 0
        for key in await self._store.registry.service_keys():
            # At most ttl_s old: a service with many replicas costs Redis one read a second.
            cached = await self._services.get(key)
            for index, pod in sorted(cached.pods.items()):
                # A failed pod's users, and a hung one's that resumed during its fence.
                if not pod.keeps_bound_users and cached.users.get(index, 0):
                    reason = pod.health.reason or pod.state.value
                    fence = pod.health.fenced_until
                    if fence is not None and fence > self._clock():
                        self.fences.start(key, index, reason, fence)
                        continue
                    event = await self.evacuate(cached, index, reason, leftovers=True)
                    moved += event.affected_users if event else 0
                rate = pod.health.drain_rate
                if pod.state is PodState.DRAINING and rate and cached.users.get(index, 0):
                    self.start_drainer(key, index, rate)
        return moved

    async def record(
        self,
        cached: CachedService,
        kind: FailoverType,
        *,
        pod: int,
        reason: str,
        users: Sequence[str] = (),
        count: int | None = None,
        to_pods: dict[int, int] | None = None,
    ) -> FailoverEvent:
        """Write one event to the service's failover history (and tell the callbacks)."""
        event = FailoverEvent(
            at=self._clock(),
            type=kind,
            namespace=cached.service.namespace,
            service=cached.service.name,
            pod=pod,
            reason=reason,
            affected_users=len(users) if count is None else count,
            sample=list(users[:SAMPLE_SIZE]),
            to_pods=to_pods or {},
        )
        await self._store.history.record(cached.keys, event)
        self._callbacks.on_event_recorded(event)
        return event

    async def close(self) -> None:
        """Stop the movers of draining pods and of fenced ones."""
        await cancel_all(self._drainers.values())
        await self.fences.close()


async def _take(source: AsyncIterator[str], count: int) -> AsyncIterator[str]:
    """Up to ``count`` items of ``source``, leaving the rest for the next call."""
    for _ in range(count):
        try:
            yield await anext(source)
        except StopAsyncIteration:
            return
