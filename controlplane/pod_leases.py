"""Pods that register themselves with a lease, for orchestrators without stable names.

A pod (or its sidecar) registers through the admin API with a time to live and registers
again before it ends; the lease's end is kept in Redis (``store/leases.py``), so every replica
sees it, and the leader alone acts on lapsed leases (``check``), as ``domain/leases.py`` says:
drain at once, fail once the lease has been over for ``drain_s``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from controlplane.domain import FAILED, Pod, ServiceKey
from controlplane.domain.leases import RENEWED, after_lapse, after_renewal, lapsed_reason
from controlplane.errors import NoLease
from controlplane.pod_addresses import PodAddresses
from controlplane.pod_health import PodHealthKeeper
from controlplane.service_cache import CachedService, ServiceCache
from controlplane.store import Store

log = logging.getLogger("stateful_route.manager")


class PodLeases:
    """Registers and renews pods' leases; drains and fails the pods whose lease lapsed."""

    def __init__(
        self,
        store: Store,
        services: ServiceCache,
        addresses: PodAddresses,
        health: PodHealthKeeper,
        *,
        drain_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._services = services
        self._addresses = addresses
        self._health = health
        self.drain_s = drain_s
        self._clock = clock

    async def register(
        self, key: ServiceKey, pod: Pod, ttl_s: float, *, assign_index: bool = False
    ) -> tuple[Pod, float]:
        """Register ``pod`` (or renew its lease) for ``ttl_s``; the pod and when its lease ends.

        With ``assign_index`` the pod's own index is ignored: it is the index of the pod
        registered at the same name (or address) and port, else the lowest free one.
        """
        cached = await self._services.get(key, fresh=True)
        current = self._same_place(cached, pod) if assign_index else cached.pods.get(pod.index)
        if current is not None:
            pod = pod.model_copy(update={"index": current.index})
        if current is None or _moved(current, pod):
            new = assign_index and current is None
            pod = await self._addresses.register(cached, pod, at_free_index=new)
            cached.pods[pod.index] = pod
        else:
            pod = current
        ends_at = self._clock() + ttl_s
        await self._store.leases.renew(cached.keys, pod.index, ends_at)
        signal = after_renewal(pod.health)
        if signal is not None:
            await self._health.signal(cached, pod.index, signal, RENEWED)
            pod = cached.pods[pod.index]
        return pod, ends_at

    async def release(self, key: ServiceKey, index: int) -> Pod:
        """The pod is leaving: its lease ends now (it is drained now, failed ``drain_s`` on)."""
        cached = await self._services.get(key, fresh=True)
        cached.pod(index)
        if await self._store.leases.ends_at(cached.keys, index) is None:
            raise NoLease(f"pod {index} holds no lease (it did not register itself)", pod=index)
        await self._store.leases.renew(cached.keys, index, self._clock())
        await self._check(cached)
        return cached.pods[index]

    async def check_all(self) -> int:
        """Drain or fail the pods whose lease lapsed, in every service (the leader's job); how
        many pods changed."""
        changed = 0
        for key in await self._store.registry.service_keys():
            changed += await self._check(await self._services.get(key))
        return changed

    async def _check(self, cached: CachedService) -> int:
        """Drain or fail the pods of one service whose lease lapsed (the leader's job); how
        many pods changed."""
        now = self._clock()
        changed = 0
        for index, ended_at in await self._store.leases.lapsed(cached.keys, now):
            pod = cached.pods.get(index)
            signal = None if pod is None else after_lapse(pod.health, now - ended_at, self.drain_s)
            if pod is not None and signal is not None:
                log.info(
                    "lease_lapsed service=%s pod=%d lapsed_s=%.1f signal=%s",
                    cached.service.key, index, now - ended_at, signal.value,
                )  # fmt: skip
                await self._health.signal(cached, index, signal, lapsed_reason(now - ended_at))
                pod = cached.pods[index]
                changed += 1
            if pod is None or pod.state in FAILED:  # the policy is done with it
                await self._store.leases.drop(cached.keys, index)
        return changed

    @staticmethod
    def _same_place(cached: CachedService, pod: Pod) -> Pod | None:
        for known in cached.pods.values():
            same = known.name == pod.name if pod.name is not None else known.host == pod.host
            if same and known.port == pod.port and (known.name is None) == (pod.name is None):
                return known
        return None


def _moved(current: Pod, pod: Pod) -> bool:
    """The registration changes where the pod is or its weight (a renewal writes nothing)."""
    if (current.name, current.port, current.weight) != (pod.name, pod.port, pod.weight):
        return True
    return pod.name is None and current.host != pod.host
