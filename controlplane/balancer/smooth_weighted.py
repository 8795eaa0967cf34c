"""Smooth weighted round robin (nginx): weighted shares, interleaved rather than in bursts."""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.balancer.base import Candidate, eligible
from controlplane.domain import Strategy


class SmoothWeightedRoundRobin:
    """nginx's algorithm: each pick adds every pod's weight to its ``current``, takes the
    largest ``current`` (lowest index on a tie) and subtracts the total weight from it.

    The sequence repeats every ``sum(weights)`` picks, and every run of that many consecutive
    picks gives each pod exactly its weight. Weights 5, 1, 1 yield a a b a c a a, not a a a a a b c.
    The state restarts whenever the eligible set or a weight changes, since the old ``current``
    values no longer describe a valid cycle.
    """

    strategy = Strategy.WEIGHTED_ROUND_ROBIN

    def __init__(self) -> None:
        self._members: tuple[tuple[int, int], ...] = ()
        self._current: dict[int, int] = {}

    def pick(self, candidates: Sequence[Candidate], uid: str) -> int:
        pods = eligible(candidates)
        members = tuple((c.index, c.weight) for c in pods)
        if members != self._members:
            self._members = members
            self._current = dict.fromkeys((index for index, _ in members), 0)
        current = self._current
        for index, weight in members:
            current[index] += weight
        # Members are in index order and max() keeps the first maximum: ties go to the lowest.
        chosen = max(current, key=current.__getitem__)
        current[chosen] -= sum(weight for _, weight in members)
        return chosen
