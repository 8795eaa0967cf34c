"""Weighted consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2017).

A user hashes to a point on a ring of virtual nodes, as many per pod as its weight deserves,
and walks clockwise to the first pod still under its capacity:

    capacity_i = ceil(c * (total_bound_users + 1) * weight_i / total_weight)

``c`` > 1 is the balance factor. No pod ever holds more than about ``c`` times its fair share,
and since capacities sum to more than the users already bound, some pod always has room.

Placement depends only on the candidates and the uid, hashed with blake2b (never Python's
salted ``hash()``): every replica of the control plane places a user on the same pod, and the
strategy still works as the fallback when Redis, and so every other kind of state, is gone.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from hashlib import blake2b

from controlplane.balancer.base import Candidate, eligible
from controlplane.domain import Strategy
from controlplane.errors import InvalidInput

# Virtual nodes of the heaviest pod; lighter pods get proportionally fewer (at least one).
# 160 points per pod is ketama's choice: the ring's arcs then differ by a few percent at most.
VNODES_PER_POD = 160
DEFAULT_BALANCE_FACTOR = 1.25


def stable_hash(key: str) -> int:
    """A 64-bit hash that is the same in every process, on every machine, in every release."""
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class _Ring:
    points: tuple[int, ...]  # sorted hashes of the virtual nodes
    owners: tuple[int, ...]  # owners[i]: index of the pod that owns points[i]


@lru_cache(maxsize=256)
def _ring(members: tuple[tuple[int, int], ...]) -> _Ring:
    """The ring for one set of ``(index, weight)`` pairs; cached since sets change rarely."""
    heaviest = max(weight for _, weight in members)
    nodes = sorted(
        (stable_hash(f"{index}#{vnode}"), index)
        for index, weight in members
        for vnode in range(max(1, round(VNODES_PER_POD * weight / heaviest)))
    )
    return _Ring(tuple(point for point, _ in nodes), tuple(owner for _, owner in nodes))


class BoundedLoadHash:
    """Places a user on the first pod clockwise from ``stable_hash(uid)`` that has room.

    ``bound_users`` of each candidate must be the users currently bound to it; with all zeros
    (no Redis) this is plain weighted consistent hashing. Only eligible pods count towards the
    total: users left on a draining pod do not inflate the others' capacities.
    """

    strategy = Strategy.BOUNDED_HASH

    def __init__(self, balance_factor: float = DEFAULT_BALANCE_FACTOR) -> None:
        if not (math.isfinite(balance_factor) and balance_factor >= 1.0):
            raise InvalidInput("hash balance factor must be a number >= 1", field="balance_factor")
        # Exact decimal arithmetic: 1.1 means 11/10, not the float just above it, whose
        # capacities would land one user too high whenever c * average is a whole number.
        self._factor = Fraction(str(balance_factor))
        self.balance_factor = balance_factor

    def pick(self, candidates: Sequence[Candidate], uid: str) -> int:
        pods = {c.index: c for c in eligible(candidates)}
        ring = _ring(tuple((index, c.weight) for index, c in pods.items()))
        total_weight = sum(c.weight for c in pods.values())
        total_users = sum(c.bound_users for c in pods.values())
        start = bisect_left(ring.points, stable_hash(uid))
        seen: set[int] = set()
        for offset in range(len(ring.owners)):
            index = ring.owners[(start + offset) % len(ring.owners)]
            if index in seen:
                continue
            seen.add(index)
            pod = pods[index]
            if pod.bound_users < self.capacity(pod.weight, total_weight, total_users):
                return index
            if len(seen) == len(pods):
                break
        raise AssertionError("capacities sum to more than the bound users; a pod must have room")

    def capacity(self, weight: int, total_weight: int, total_users: int) -> int:
        """Most users a pod of ``weight`` may hold once one more user is placed."""
        return math.ceil(self._factor * (total_users + 1) * weight / total_weight)
