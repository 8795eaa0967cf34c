"""Where each pod is: a pod given by name gets its address from DNS when it is registered and
whenever its name is resolved again (``discovery/watcher.py``); the rules of what an answer
means are in ``domain/addresses.py``.

The index is the pod's identity: a new address is written into the same pod (compare-and-set,
like health), so its bound users, load and history stay with it. A pod left without an address
is failed, with the answer as the reason; it serves again once it has an address and passes
its health checks, like any failed pod.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from controlplane.discovery.resolver import Resolver
from controlplane.domain import FAILED, HealthSignal, Pod, PodHealth, PodState, ServiceKey
from controlplane.domain.addresses import Resolution
from controlplane.pod_health import PodHealthKeeper
from controlplane.service_cache import CachedService, ServiceCache
from controlplane.store import Store

log = logging.getLogger("stateful_route.manager")


class PodAddresses:
    """Registers pods at their current address and moves them when their name's answer does."""

    def __init__(
        self,
        store: Store,
        services: ServiceCache,
        health: PodHealthKeeper,
        resolver: Resolver,
        *,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._services = services
        self._health = health
        self.resolver = resolver
        self._clock = clock

    async def register(
        self, cached: CachedService, pod: Pod, *, at_free_index: bool = False
    ) -> Pod:
        """Write ``pod`` (new, or a new address, name, port or weight for a known one: it keeps
        its health and load), its name resolved now. With ``at_free_index`` it is a new pod,
        written under the lowest index no pod holds (its own index is ignored)."""
        current = None if at_free_index else cached.pods.get(pod.index)
        resolution = None if pod.name is None else await self.resolver.resolve(pod.name)
        if resolution is not None:
            known = current.host if current is not None and current.name == pod.name else None
            pod = pod.model_copy(update={"host": resolution.address_for(known)})
        if current is not None:
            moved = current.at_host(pod.host)
            pod = pod.model_copy(
                update={"health": moved.health, "load": moved.load, "epoch": moved.epoch}
            )
        elif resolution is not None and pod.host is None:
            health = PodHealth(
                state=PodState.DOWN, since=self._clock(), reason=resolution.down_reason
            )
            pod = pod.model_copy(update={"health": health})
        elif pod.health.since == 0:
            pod = pod.model_copy(
                update={"health": pod.health.model_copy(update={"since": self._clock()})}
            )
        if at_free_index:
            pod = await self._store.registry.add_pod_at_free_index(cached.keys, pod)
        else:
            await self._store.registry.put_pod(cached.keys, pod)
        self._services.changed(cached.service.key, forget=True)
        if resolution is not None:
            self._log_move(cached, current, pod)
            if current is not None and pod.host is None and current.state not in FAILED:
                cached.pods[pod.index] = pod
                await self._health.signal(
                    cached, pod.index, HealthSignal.FAIL, resolution.down_reason
                )
        return pod

    async def apply(self, key: ServiceKey, index: int, resolution: Resolution) -> Pod | None:
        """Move pod ``index`` as a new answer for its name says; fail it if that leaves it
        without an address. None if the pod is gone or now has another name."""
        cached = await self._services.get(key)

        def change(pod: Pod) -> tuple[Pod, Pod]:
            if pod.name != resolution.name:
                return pod, pod
            return pod.at_host(resolution.address_for(pod.host)), pod

        before = cached.pods.get(index)
        if before is None or before.name != resolution.name:
            return None
        if resolution.address_for(before.host) != before.host:
            updated = await self._store.registry.update_pod(cached.keys, index, change)
            if updated is None:
                return None
            pod, before = updated
            cached.pods[index] = pod
            if pod.host != before.host:
                self._log_move(cached, before, pod)
                self._services.changed(cached.service.key)
        pod = cached.pods[index]
        if pod.name == resolution.name and pod.host is None and pod.state not in FAILED:
            await self._health.signal(cached, index, HealthSignal.FAIL, resolution.down_reason)
            pod = cached.pods[index]
        return pod

    @staticmethod
    def _log_move(cached: CachedService, before: Pod | None, after: Pod) -> None:
        if before is not None and before.host != after.host:
            log.info(
                "pod_address service=%s pod=%d name=%s from=%s to=%s",
                cached.service.key, after.index, after.name, before.host, after.host,
            )  # fmt: skip
