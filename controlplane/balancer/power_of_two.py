"""Power of two choices (least request): two random pods, the less busy one wins."""

from __future__ import annotations

import random
from collections.abc import Sequence

from controlplane.balancer._share import per_weight
from controlplane.balancer.base import Candidate, eligible
from controlplane.domain import Strategy


class PowerOfTwoChoices:
    """Draws two distinct eligible pods, each with probability proportional to its weight, and
    picks the one with fewer ``active_requests / weight`` (then fewer bound users per weight,
    then the lower index).

    Two random choices spread load almost as well as scanning every pod, but without every
    replica of the control plane herding onto the same "least loaded" pod between load reports.
    Pass a seeded ``rng`` for reproducible picks.
    """

    strategy = Strategy.POWER_OF_TWO

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()

    def pick(self, candidates: Sequence[Candidate], uid: str) -> int:
        pods = eligible(candidates)
        if len(pods) == 1:
            return pods[0].index
        first = self._draw(pods)
        second = self._draw([c for c in pods if c is not first])
        chosen = min(
            (first, second),
            key=lambda c: (
                per_weight(c.active_requests, c),
                per_weight(c.bound_users, c),
                c.index,
            ),
        )
        return chosen.index

    def _draw(self, pods: list[Candidate]) -> Candidate:
        return self._rng.choices(pods, weights=[c.weight for c in pods])[0]
