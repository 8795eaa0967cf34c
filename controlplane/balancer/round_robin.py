"""Round robin: every eligible pod in turn, by index."""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.balancer.base import Candidate, eligible
from controlplane.domain import Strategy


class RoundRobin:
    """Rotates over the eligible pods in index order, ignoring weight and load.

    Remembers the index it picked last, not a position in a list, so a pod joining or leaving
    the eligible set neither skips nor repeats the others: the next pick is the next larger
    eligible index, wrapping to the smallest.
    """

    strategy = Strategy.ROUND_ROBIN

    def __init__(self) -> None:
        self._last: int | None = None

    def pick(self, candidates: Sequence[Candidate], uid: str) -> int:
        pods = eligible(candidates)
        last = self._last
        chosen = pods[0] if last is None else next((c for c in pods if c.index > last), pods[0])
        self._last = chosen.index
        return chosen.index
