"""Where a failed pod's users go."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.balancer import Candidate
from controlplane.domain import PodState
from controlplane.errors import NoHealthyPods
from controlplane.failover import plan_moves, rebalance_quota


def test_users_spread_over_every_eligible_pod_by_weight() -> None:
    candidates = [Candidate(0, weight=1), Candidate(1, weight=3), Candidate(2, state=PodState.DOWN)]
    plan = plan_moves([f"u{i}" for i in range(4000)], candidates, balance_factor=1.25)
    assert set(plan) == {0, 1}
    assert len(plan[1]) > 2 * len(plan[0])


def test_users_go_to_suspect_pods_only_when_no_pod_is_healthy() -> None:
    uids = [f"u{i}" for i in range(100)]
    candidates = [Candidate(0, weight=5, state=PodState.SUSPECT), Candidate(1)]
    assert set(plan_moves(uids, candidates, balance_factor=1.25)) == {1}
    candidates = [Candidate(0, state=PodState.SUSPECT), Candidate(1, state=PodState.DOWN)]
    assert set(plan_moves(uids, candidates, balance_factor=1.25)) == {0}


@given(st.integers(1, 500), st.lists(st.integers(1, 5), min_size=1, max_size=6))
def test_no_target_takes_more_than_the_bounded_share(users: int, weights: list[int]) -> None:
    candidates = [Candidate(i, weight=w) for i, w in enumerate(weights)]
    plan = plan_moves([f"u{i}" for i in range(users)], candidates, balance_factor=1.25)
    assert sum(len(v) for v in plan.values()) == users
    for index, moved in plan.items():
        assert len(moved) <= math.ceil(1.25 * users * weights[index] / sum(weights))


def test_no_eligible_pod_means_no_plan() -> None:
    with pytest.raises(NoHealthyPods):
        plan_moves(["a"], [Candidate(0, state=PodState.DRAINING)], balance_factor=1.25)


def test_rebalance_takes_from_the_fullest_pods_until_the_target_has_its_share() -> None:
    candidates = [
        Candidate(0, bound_users=0),
        Candidate(1, bound_users=70),
        Candidate(2, bound_users=50),
    ]
    assert rebalance_quota(candidates, 0) == {1: 30, 2: 10}
