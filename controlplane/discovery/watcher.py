"""Pods' names resolved again, in the background: on the leader, every ``every_s`` for a
serving pod, every ``failed_every_s`` for a failed or unresolved one, and at once for a pod
whose failure is reported (``pod_failed``). The manager applies each answer
(``StatefulRouteManager.addresses.apply``); this module only decides when to ask.

Nothing here is on a request's path. Each pod's answer is logged once per change of its
outcome (resolved to an address, name missing, resolver not answering), not once per round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from controlplane.discovery.resolver import Resolver
from controlplane.domain import FAILED, Pod, ServiceKey
from controlplane.domain.addresses import Resolution
from controlplane.errors import StatefulRouteError
from controlplane.manager import StatefulRouteManager
from controlplane.outage import UNREACHABLE, RedisOutage

log = logging.getLogger("stateful_route.discovery")

PodKey = tuple[ServiceKey, int]


class PodNameWatcher:
    """Re-resolves the names of every service's pods; owns one task (``run``)."""

    def __init__(
        self,
        manager: StatefulRouteManager,
        resolver: Resolver,
        *,
        every_s: float,
        failed_every_s: float,
        outage: RedisOutage,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._manager = manager
        self._resolver = resolver
        self._every_s = every_s
        self._failed_every_s = failed_every_s
        self._outage = outage
        self._clock = clock
        self._asked_at: dict[PodKey, float] = {}
        self._outcomes: dict[PodKey, str] = {}
        self._kicked: set[PodKey] = set()
        self._wake = asyncio.Event()

    def pod_failed(self, key: ServiceKey, index: int) -> None:
        """Resolve this pod's name again now: a pod that died may be back elsewhere."""
        self._kicked.add((key, index))
        self._wake.set()

    async def run(self) -> None:
        """Rounds until cancelled, each at most ``failed_every_s`` apart (sooner when kicked);
        only the leader resolves."""
        while True:
            if self._manager.is_leader():
                try:
                    await self.round()
                except UNREACHABLE as exc:
                    self._outage.failed("resolve-names", exc)
                except Exception:  # one bad round must not end the re-resolution
                    log.exception("resolve_round_failed")
            with contextlib.suppress(TimeoutError):
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel.
                async with asyncio.timeout(self._failed_every_s):
                    await self._wake.wait()
            self._wake.clear()

    async def round(self) -> int:
        """Resolve the names that are due, and apply the answers; how many were asked."""
        now = self._clock()
        named: list[tuple[ServiceKey, Pod]] = []
        for key in await self._manager.store.registry.service_keys():
            with contextlib.suppress(StatefulRouteError):  # deleted meanwhile
                named += [(key, pod) for pod in await self._manager.pods(key) if pod.name]
        self._forget_all_but({(key, pod.index) for key, pod in named})
        due = [(key, pod) for key, pod in named if self._due(key, pod, now)]
        answers = await asyncio.gather(
            *(self._resolver.resolve(pod.name) for _, pod in due if pod.name is not None)
        )
        for (key, pod), answer in zip(due, answers, strict=True):
            self._asked_at[(key, pod.index)] = now
            self._kicked.discard((key, pod.index))
            self._note(key, pod.index, answer)
            try:
                await self._manager.addresses.apply(key, pod.index, answer)
            except StatefulRouteError as exc:  # the pod or service left meanwhile
                log.info("resolve_skipped service=%s pod=%d error=%s", key, pod.index, exc.message)
        return len(due)

    def _due(self, key: ServiceKey, pod: Pod, now: float) -> bool:
        asked = self._asked_at.get((key, pod.index))
        if asked is None or (key, pod.index) in self._kicked:
            return True
        failed = pod.host is None or pod.state in FAILED
        return now - asked >= (self._failed_every_s if failed else self._every_s)

    def _forget_all_but(self, pods: set[PodKey]) -> None:
        """Drop what is remembered of pods removed or no longer named."""
        for remembered in (self._asked_at, self._outcomes):
            for gone in remembered.keys() - pods:
                del remembered[gone]

    def _note(self, key: ServiceKey, index: int, answer: Resolution) -> None:
        outcome = answer.outcome
        if self._outcomes.get((key, index)) == outcome:
            return
        self._outcomes[(key, index)] = outcome
        if answer.addresses:
            log.info(
                "pod_name_resolved service=%s pod=%d name=%s addresses=%s",
                key, index, answer.name, ",".join(answer.addresses),
            )  # fmt: skip
        else:
            log.warning(
                "pod_name_unresolved service=%s pod=%d name=%s outcome=%s error=%r",
                key, index, answer.name, outcome, answer.error,
            )  # fmt: skip
