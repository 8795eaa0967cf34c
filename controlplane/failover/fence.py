"""Hung pods that failed: their users move once the fence ends (docs/architecture.md).

A request Envoy sent to a hung pod before its failure reached Envoy may still be answered
until the route timeout is over; its user must not have moved by then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from controlplane.domain import ServiceKey
from controlplane.outage import UNREACHABLE
from controlplane.service_cache import CachedService, ServiceCache
from controlplane.tasks import cancel_all

log = logging.getLogger("stateful_route.manager")

# Moves a failed pod's users (the executor's ``evacuate``).
Evacuate = Callable[[CachedService, int, str], Awaitable[object]]


class Fences:
    """One waiting evacuation per fenced pod, run by the leader when its fence ends."""

    def __init__(
        self,
        services: ServiceCache,
        evacuate: Evacuate,
        *,
        is_leader: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self._services = services
        self._evacuate = evacuate
        self._is_leader = is_leader
        self._clock = clock
        self._waiting: dict[tuple[ServiceKey, int], asyncio.Task[None]] = {}

    def start(self, key: ServiceKey, index: int, reason: str, until: float) -> None:
        """Evacuate pod ``index`` at ``until`` (on the clock), unless that is under way."""
        if self._waiting.get((key, index)):
            return
        log.info(
            "failover_fenced service=%s pod=%d wait_s=%.2f reason=%r",
            key, index, until - self._clock(), reason,
        )  # fmt: skip
        task = asyncio.create_task(
            self._evacuate_at(key, index, reason, until), name=f"fence-{key}-{index}"
        )
        self._waiting[key, index] = task
        task.add_done_callback(lambda _: self._waiting.pop((key, index), None))

    async def _evacuate_at(self, key: ServiceKey, index: int, reason: str, until: float) -> None:
        await asyncio.sleep(max(0.0, until - self._clock()))
        try:
            cached = await self._services.get(key, fresh=True)
            pod = cached.pods.get(index)
            # Resumed meanwhile (RECOVERING) it still has no label: its users move all the same.
            if self._is_leader() and pod is not None and not pod.keeps_bound_users:
                await self._evacuate(cached, index, reason)
        except UNREACHABLE as exc:  # the leader's next reconcile moves them
            log.warning("fenced_failover_deferred service=%s pod=%d error=%r", key, index, exc)
        except Exception:
            log.exception("fenced_failover_failed service=%s pod=%d", key, index)

    async def close(self) -> None:
        await cancel_all(self._waiting.values())
