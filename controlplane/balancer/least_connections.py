"""Least connections: the pod with the fewest open connections per unit of weight."""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.balancer._share import per_weight
from controlplane.balancer.base import Candidate, eligible
from controlplane.domain import Strategy


class LeastConnections:
    """Picks the lowest ``busy connections / weight``.

    A pod's busy connections are at least its requests in flight: Envoys' load reports count
    only requests, and each one holds a connection while it runs (HTTP/1.1 upstreams), so the
    larger of the two counts is taken.

    Ties go to the fewest bound users per weight, then the lowest index. Connection counts
    arrive with load reports, so between two reports a burst of new users would otherwise all
    land on the same pod; the bound-user count is fresh for every pick.
    """

    strategy = Strategy.LEAST_CONNECTIONS

    def pick(self, candidates: Sequence[Candidate], uid: str) -> int:
        chosen = min(
            eligible(candidates),
            key=lambda c: (
                per_weight(max(c.active_connections, c.active_requests), c),
                per_weight(c.bound_users, c),
                c.index,
            ),
        )
        return chosen.index
