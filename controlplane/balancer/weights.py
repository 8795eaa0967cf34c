"""The load_balancing_weight Envoy gets for each pod (for traffic not pinned to a pod)."""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.domain import Pod, PodState

# A saturated pod keeps this much headroom (percent) so it is deprioritised, not starved.
MIN_HEADROOM_PCT = 1
# Per-state multipliers, in halves: integers keep the result exact.
_HEALTH_FACTOR = {PodState.HEALTHY: 2, PodState.SUSPECT: 1}
# Envoy rejects a locality whose weights sum past 2**32 - 1; this cap keeps 4294 pods legal.
MAX_ENDPOINT_WEIGHT = 1_000_000


def endpoint_weights(pods: Sequence[Pod]) -> dict[int, int]:
    """Map every pod's index to its Envoy ``load_balancing_weight`` (an integer, always >= 1).

    For a pod that accepts new users::

        weight * headroom * health,  capped at MAX_ENDPOINT_WEIGHT

    where ``weight`` is the configured capacity (1..1000), ``headroom`` is
    ``100 - load.load_state`` percent (at least MIN_HEADROOM_PCT), and ``health`` is 2 for
    HEALTHY and 1 for SUSPECT, so a suspect pod gets half the traffic of an equal healthy one.
    The result ranges from 1 to 200,000, fine-grained enough that a one-point load change
    still moves traffic.

    Every other pod gets 1: Envoy rejects a weight of 0, and its ``health_status`` already
    keeps traffic away.
    """
    return {pod.index: _weight(pod) for pod in pods}


def _weight(pod: Pod) -> int:
    health = _HEALTH_FACTOR.get(pod.state)
    if health is None:
        return 1
    headroom = max(100 - pod.load.load_state, MIN_HEADROOM_PCT)
    return max(1, min(pod.weight * headroom * health, MAX_ENDPOINT_WEIGHT))
