"""Placement strategies, each a small class behind the ``Balancer`` protocol, and the weights
Envoy gets for each pod."""

from __future__ import annotations

import random
from collections.abc import Callable

from controlplane.balancer.base import Balancer, Candidate, eligible
from controlplane.balancer.bounded_hash import BoundedLoadHash, stable_hash
from controlplane.balancer.least_connections import LeastConnections
from controlplane.balancer.least_response_time import LeastResponseTime
from controlplane.balancer.power_of_two import PowerOfTwoChoices
from controlplane.balancer.round_robin import RoundRobin
from controlplane.balancer.smooth_weighted import SmoothWeightedRoundRobin
from controlplane.balancer.weights import MAX_ENDPOINT_WEIGHT, endpoint_weights
from controlplane.domain import Strategy

__all__ = [
    "MAX_ENDPOINT_WEIGHT",
    "Balancer",
    "BoundedLoadHash",
    "Candidate",
    "LeastConnections",
    "LeastResponseTime",
    "PowerOfTwoChoices",
    "RoundRobin",
    "SmoothWeightedRoundRobin",
    "eligible",
    "endpoint_weights",
    "make_balancer",
    "stable_hash",
]


def make_balancer(
    strategy: Strategy, *, balance_factor: float = 1.25, rng: random.Random | None = None
) -> Balancer:
    """A new balancer for ``strategy``.

    Round robin and smooth weighted round robin keep their rotation in the instance: keep one
    instance per service (and strategy) and reuse it, or every pick starts a new rotation.
    """
    factories: dict[Strategy, Callable[[], Balancer]] = {
        Strategy.ROUND_ROBIN: RoundRobin,
        Strategy.LEAST_CONNECTIONS: LeastConnections,
        Strategy.WEIGHTED_ROUND_ROBIN: SmoothWeightedRoundRobin,
        Strategy.LEAST_RESPONSE_TIME: LeastResponseTime,
        Strategy.POWER_OF_TWO: lambda: PowerOfTwoChoices(rng),
        Strategy.BOUNDED_HASH: lambda: BoundedLoadHash(balance_factor),
    }
    return factories[strategy]()
