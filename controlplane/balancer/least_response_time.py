"""Least response time: the pod expected to answer soonest."""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.balancer._share import per_weight
from controlplane.balancer.base import Candidate, eligible
from controlplane.domain import Strategy


class LeastResponseTime:
    """Picks the lowest response-time EWMA, scaled by ``(active_requests + 1) / weight``.

    The scaling (on by default) turns "fast" into "fast and not busy": a quick pod already
    serving many requests is about to slow down. Ties (e.g. no pod has reported yet, all at 0)
    go to the fewest bound users per weight, then the lowest index.
    """

    strategy = Strategy.LEAST_RESPONSE_TIME

    def __init__(self, *, scale_by_load: bool = True) -> None:
        self.scale_by_load = scale_by_load

    def pick(self, candidates: Sequence[Candidate], uid: str) -> int:
        chosen = min(
            eligible(candidates),
            key=lambda c: (self._score(c), per_weight(c.bound_users, c), c.index),
        )
        return chosen.index

    def _score(self, candidate: Candidate) -> float:
        if not self.scale_by_load:
            return candidate.response_time_ms
        return candidate.response_time_ms * (candidate.active_requests + 1) / candidate.weight
