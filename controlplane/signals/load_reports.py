"""Envoys' load reports (LRS) as signals: a pod the fleet's requests fail on is failed, and
each pod's requests in flight are summed over the reporting Envoys.

The weighing is pure (``domain/fleet_evidence.py``); this module hands its verdicts to the
manager. Reports arrive over the network, so a control plane learns of a pod failure any
Envoy connected to it sees, with no file shared with that Envoy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from controlplane.domain import HealthSignal
from controlplane.domain.fleet_evidence import (
    EndpointLoad,
    EvidenceRules,
    FailingEndpoint,
    FleetEvidence,
)
from controlplane.manager import StatefulRouteManager
from controlplane.signals.envoy_events import HostSignal, PodLocator, deliver_signal

log = logging.getLogger("stateful_route.signals")


class FleetLoadSignals:
    """Receives the LRS stream's reports (a ``LoadReportSink``) and acts on them."""

    def __init__(self, manager: StatefulRouteManager, rules: EvidenceRules) -> None:
        self._manager = manager
        self._locator = PodLocator(manager)
        self.evidence = FleetEvidence(rules)

    async def load_reported(self, envoy: str, loads: Sequence[EndpointLoad]) -> None:
        await self._fail(self.evidence.report(envoy, loads))

    async def envoy_gone(self, envoy: str) -> None:
        await self._fail(self.evidence.forget(envoy))

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
