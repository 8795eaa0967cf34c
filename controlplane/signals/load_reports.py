"""Envoys' load reports (LRS) as signals: a pod the fleet's requests fail on is failed, and
each pod's requests in flight are summed over the reporting Envoys.

The weighing is pure (``domain/fleet_evidence.py``); this module hands its verdicts to the
manager. Reports arrive over the network, so a control plane learns of a pod failure any
Envoy connected to it sees, with no file shared with that Envoy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from controlplane.domain import EnvoyLoadShare, HealthSignal, ServiceKey
from controlplane.domain.fleet_evidence import (
    EndpointLoad,
    EvidenceRules,
    FailingEndpoint,
    FleetEvidence,
)
from controlplane.errors import StatefulRouteError
from controlplane.manager import StatefulRouteManager
from controlplane.signals.envoy_events import HostSignal, PodLocator, deliver_signal

# A replica's share of the load counts while younger than this many report intervals.
_SHARE_LIFETIME_INTERVALS = 3

log = logging.getLogger("stateful_route.signals")


class FleetLoadSignals:
    """Receives the LRS stream's reports (a ``LoadReportSink``) and acts on them.

    Each replica hears only the Envoys attached to it, so ``publish_load`` writes this
    replica's share of each pod's requests in flight to Redis, and the leader sums the shares
    into the pods' load (what the balancer reads).
    """

    def __init__(
        self,
        manager: StatefulRouteManager,
        rules: EvidenceRules,
        *,
        replica: str,
        interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._manager = manager
        self._locator = PodLocator(manager)
        self._replica = replica
        self._share_lifetime_s = interval_s * _SHARE_LIFETIME_INTERVALS
        self._clock = clock
        self._shared: set[ServiceKey] = set()  # services this replica wrote a share of
        self._evidence = FleetEvidence(rules)

    async def load_reported(self, envoy: str, loads: Sequence[EndpointLoad]) -> None:
        await self._fail(self._evidence.report(envoy, loads))

    async def envoy_gone(self, envoy: str) -> None:
        await self._fail(self._evidence.forget(envoy))

    async def _fail(self, endpoints: list[FailingEndpoint]) -> None:
        for endpoint in endpoints:
            log.info(
                "envoy_reports_failing cluster=%s address=%s reason=%r",
                endpoint.cluster, endpoint.address, endpoint.reason,
            )  # fmt: skip
            signal = HostSignal(
                endpoint.cluster, endpoint.address, HealthSignal.REQUESTS_FAILING, endpoint.reason
            )
            try:
                await deliver_signal(self._manager, self._locator, signal)
            except Exception:  # Redis away: the active checks still see the pod down
                log.exception("envoy_reports_failed cluster=%s", endpoint.cluster)

    async def publish_load(self) -> None:
        """Write this replica's share of every pod's requests in flight; on the leader, sum
        every replica's fresh share into each pod's load."""
        now = self._clock()
        shares: dict[ServiceKey, dict[int, int]] = {key: {} for key in self._shared}
        clusters: dict[str, tuple[ServiceKey, dict[str, int]] | None] = {}
        for endpoint in self._evidence.endpoints():
            cluster, address = endpoint
            if cluster not in clusters:  # one look-up per service, not per pod
                clusters[cluster] = await self._locator.pods_by_address(cluster)
            found = clusters[cluster]
            if found is not None and address in found[1]:
                key, index = found[0], found[1][address]
                pods = shares.setdefault(key, {})
                pods[index] = pods.get(index, 0) + self._evidence.in_flight(endpoint)
        registry = self._manager.store.registry
        for key, in_flight in shares.items():
            keys = self._manager.store.keys(key)
            await registry.put_envoy_load_share(
                keys, self._replica, EnvoyLoadShare(at=now, in_flight=in_flight)
            )
        self._shared = {key for key, in_flight in shares.items() if in_flight}
        if self._manager.is_leader():
            for service in await self._manager.services():
                await self._sum_shares(service.key, now)

    async def _sum_shares(self, key: ServiceKey, now: float) -> None:
        keys = self._manager.store.keys(key)
        registry = self._manager.store.registry
        shares = await registry.envoy_load_shares(keys)
        stale = [r for r, share in shares.items() if now - share.at > self._share_lifetime_s]
        await registry.drop_envoy_load_shares(keys, stale)
        if not shares:
            return
        totals: dict[int, int] = {}
        for replica, share in shares.items():
            if replica not in stale:
                for index, in_flight in share.in_flight.items():
                    totals[index] = totals.get(index, 0) + in_flight
        for pod in await self._manager.pods(key):
            in_flight = totals.get(pod.index, 0)
            if pod.load.active_requests == in_flight:
                continue  # unchanged: spare Redis the write
            load = pod.load.model_copy(update={"active_requests": in_flight, "reported_at": now})
            try:
                await self._manager.report_load(key, pod.index, load)
            except StatefulRouteError as exc:  # the pod left meanwhile
                log.info("envoy_load_skipped service=%s pod=%d error=%s", key, pod.index, exc)
