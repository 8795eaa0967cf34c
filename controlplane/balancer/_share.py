"""Load per unit of weight, compared exactly so ties are real ties and picks are reproducible."""

from __future__ import annotations

from fractions import Fraction

from controlplane.balancer.base import Candidate


def per_weight(amount: int, candidate: Candidate) -> Fraction:
    """``amount / weight`` as an exact fraction (floats would make near-ties order-dependent)."""
    return Fraction(amount, candidate.weight)
