"""Which pods a new user may be placed on, beyond their health state (pure).

A pod recovered within ``SETTLE_S`` takes no new user while another pod preferred for new
users (HEALTHY) can: the miss path pins a new user's first request to its pod, and Envoy
honours the pin only once the push that tells it the endpoint is serving again has arrived.
Pods just added do not settle: a control plane starting registers them one by one, and each
leaving the settle in turn would draw every new user.
"""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.domain.health import PREFERRED_FOR_NEW_USERS
from controlplane.domain.models import Pod

SETTLE_S = 1.0


def sitting_out(pods: Mapping[int, Pod], now: float) -> frozenset[int]:
    """The pods a new user is not placed on now: those settling after a recovery, unless no
    other pod is preferred for new users (then every pod stays a candidate)."""
    settling = frozenset(
        index
        for index, pod in pods.items()
        if pod.health.recovered_at is not None and now - pod.health.recovered_at < SETTLE_S
    )
    if not settling:
        return settling
    others_preferred = any(
        pod.state in PREFERRED_FOR_NEW_USERS for index, pod in pods.items() if index not in settling
    )
    return settling if others_preferred else frozenset()
