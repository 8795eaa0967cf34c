"""Pod health in Redis: a signal goes through the state machine (``domain/health.py``) and is
written back with a compare-and-set, so that when several observers or replicas see the same
death exactly one transition is the failure; the failover executor then acts on it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from controlplane.domain import (
    FailoverEvent,
    HealthSignal,
    Pod,
    PodState,
    Transition,
    apply_signal,
)
from controlplane.errors import UnknownPod
from controlplane.failover.executor import FailoverExecutor
from controlplane.service_cache import CachedService, ServiceCache
from controlplane.store import Store

log = logging.getLogger("stateful_route.manager")


class PodHealthKeeper:
    """Applies health signals to pods and hands what follows to the failover executor."""

    def __init__(
        self,
        store: Store,
        services: ServiceCache,
        failover: FailoverExecutor,
        *,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._services = services
        self._failover = failover
        self._clock = clock

    async def signal(
        self, cached: CachedService, index: int, signal: HealthSignal, reason: str
    ) -> tuple[Transition, FailoverEvent | None]:
        """Apply ``signal`` to pod ``index``; the transition and the event it recorded."""
        key = cached.service.key
        cached.pod(index)
        now = self._clock()
        thresholds = cached.thresholds

        def change(pod: Pod) -> tuple[Pod, Transition]:
            transition = apply_signal(pod.health, signal, now, thresholds, reason)
            return pod.model_copy(update={"health": transition.health}), transition

        updated = await self._store.registry.update_pod(cached.keys, index, change)
        if updated is None:
            raise UnknownPod(f"pod {index} is not registered", pod=index)
        pod, transition = updated
        cached.pods[index] = pod
        if transition.changed:
            log.info(
                "pod_state service=%s pod=%d from=%s to=%s signal=%s reason=%r",
                key, index, transition.before.value, pod.state.value, signal.value, reason,
            )  # fmt: skip
            self._services.changed(key)
        event = await self._failover.after_transition(cached, index, signal, transition, reason)
        return transition, event

    async def drain_at_rate(
        self, cached: CachedService, index: int, rate: float, transition: Transition
    ) -> Transition:
        """Keep ``rate`` with a draining pod's health (the leader moves its users at that
        rate: at once if it is this replica, else from its next reconcile)."""

        def with_rate(pod: Pod) -> tuple[Pod, bool]:
            if pod.state is not PodState.DRAINING:  # recovered or failed meanwhile
                return pod, False
            health = pod.health.model_copy(update={"drain_rate": rate})
            return pod.model_copy(update={"health": health}), True

        updated = await self._store.registry.update_pod(cached.keys, index, with_rate)
        if updated is not None and updated[1]:
            transition = replace(transition, health=updated[0].health)
            cached.pods[index] = updated[0]
            if self._failover.is_leader():
                self._failover.start_drainer(cached.service.key, index, rate)
        return transition
