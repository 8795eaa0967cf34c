"""How each strategy places a new user, and what every strategy promises."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.balancer import (
    Balancer,
    BoundedLoadHash,
    Candidate,
    LeastConnections,
    LeastResponseTime,
    PowerOfTwoChoices,
    RoundRobin,
    SmoothWeightedRoundRobin,
    make_balancer,
    stable_hash,
)
from controlplane.domain import ACCEPTS_NEW_USERS, PodState, Strategy
from controlplane.errors import InvalidInput, NoHealthyPods

FAST = settings(max_examples=60, deadline=None)


def pods(*weights: int, state: PodState = PodState.HEALTHY) -> list[Candidate]:
    return [Candidate(index=i, weight=w, state=state) for i, w in enumerate(weights)]


def picks(balancer: Balancer, candidates: list[Candidate], n: int) -> list[int]:
    return [balancer.pick(candidates, f"user-{i}") for i in range(n)]


def place(balancer: Balancer, candidates: list[Candidate], uids: list[str]) -> list[Candidate]:
    """Place users one by one, counting each on its pod as the store would."""
    by_index = {c.index: c for c in candidates}
    for uid in uids:
        chosen = balancer.pick(list(by_index.values()), uid)
        old = by_index[chosen]
        by_index[chosen] = Candidate(
            old.index, old.weight, old.state, bound_users=old.bound_users + 1
        )
    return list(by_index.values())


def balancer_for(strategy: Strategy) -> Balancer:
    return make_balancer(strategy, rng=random.Random(7))


candidate_lists = st.lists(
    st.builds(
        Candidate,
        index=st.integers(0, 20),
        weight=st.integers(1, 10),
        state=st.sampled_from(PodState),
        active_requests=st.integers(0, 50),
        active_connections=st.integers(0, 50),
        response_time_ms=st.floats(0, 500),
        load_state=st.integers(0, 100),
        bound_users=st.integers(0, 30),
    ),
    max_size=8,
    unique_by=lambda c: c.index,
)


# --- every strategy --------------------------------------------------------------------------


@FAST
@given(strategy=st.sampled_from(Strategy), candidates=candidate_lists)
def test_no_strategy_ever_returns_an_ineligible_pod(
    strategy: Strategy, candidates: list[Candidate]
) -> None:
    allowed = {c.index for c in candidates if c.state in ACCEPTS_NEW_USERS}
    balancer = balancer_for(strategy)
    if not allowed:
        with pytest.raises(NoHealthyPods):
            balancer.pick(candidates, "u")
        return
    assert set(picks(balancer, candidates, 12)) <= allowed


@pytest.mark.parametrize("strategy", list(Strategy))
def test_no_strategy_gives_a_suspect_pod_a_new_user_while_a_healthy_pod_can_take_it(
    strategy: Strategy,
) -> None:
    # The suspect pod is the lightest and largest: every strategy would otherwise favour it.
    suspect = Candidate(0, weight=10, state=PodState.SUSPECT)
    healthy = Candidate(1, active_requests=40, active_connections=40, response_time_ms=300)
    candidates = [suspect, healthy, Candidate(2, state=PodState.DOWN)]
    assert set(picks(balancer_for(strategy), candidates, 100)) == {1}


@pytest.mark.parametrize("strategy", list(Strategy))
def test_a_suspect_pod_takes_new_users_when_no_pod_is_healthy(strategy: Strategy) -> None:
    candidates = [Candidate(0, state=PodState.DRAINING), Candidate(1, state=PodState.SUSPECT)]
    assert set(picks(balancer_for(strategy), candidates, 20)) == {1}


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize("state", sorted(set(PodState) - ACCEPTS_NEW_USERS), ids=lambda s: str(s))
def test_every_strategy_raises_no_healthy_pods_when_none_is_eligible(
    strategy: Strategy, state: PodState
) -> None:
    with pytest.raises(NoHealthyPods):
        balancer_for(strategy).pick(pods(1, 2, 3, state=state), "u")
    with pytest.raises(NoHealthyPods):
        balancer_for(strategy).pick([], "u")


@pytest.mark.parametrize("strategy", list(Strategy))
def test_pod_zero_is_a_real_pod(strategy: Strategy) -> None:
    only_zero = [Candidate(0), Candidate(1, state=PodState.DOWN)]
    assert picks(balancer_for(strategy), only_zero, 5) == [0] * 5
    assert 0 in picks(balancer_for(strategy), pods(1, 1), 200)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_a_suspect_pod_still_takes_new_users(strategy: Strategy) -> None:
    candidates = [Candidate(0, state=PodState.DRAINING), Candidate(1, state=PodState.SUSPECT)]
    assert balancer_for(strategy).pick(candidates, "u") == 1


@pytest.mark.parametrize("strategy", list(Strategy))
def test_make_balancer_builds_the_requested_strategy(strategy: Strategy) -> None:
    assert make_balancer(strategy).strategy is strategy


def test_make_balancer_hands_over_balance_factor_and_rng() -> None:
    hashing = make_balancer(Strategy.BOUNDED_HASH, balance_factor=2.0)
    assert isinstance(hashing, BoundedLoadHash)
    assert hashing.balance_factor == 2.0
    candidates = [Candidate(i, active_requests=i % 3) for i in range(6)]
    one = make_balancer(Strategy.POWER_OF_TWO, rng=random.Random(3))
    two = make_balancer(Strategy.POWER_OF_TWO, rng=random.Random(3))
    assert picks(one, candidates, 50) == picks(two, candidates, 50)


# --- round robin -----------------------------------------------------------------------------


def test_round_robin_visits_every_eligible_pod_in_turn() -> None:
    assert picks(RoundRobin(), pods(1, 5, 1), 7) == [0, 1, 2, 0, 1, 2, 0]


def test_round_robin_follows_index_order_not_candidate_order() -> None:
    candidates = [Candidate(7), Candidate(2), Candidate(4)]
    assert picks(RoundRobin(), candidates, 4) == [2, 4, 7, 2]


def test_round_robin_skips_pods_that_take_no_new_users() -> None:
    candidates = pods(1, 1, 1, 1)
    candidates[1] = Candidate(1, state=PodState.EJECTED)
    assert picks(RoundRobin(), candidates, 6) == [0, 2, 3, 0, 2, 3]


def test_round_robin_continues_after_its_last_pick_when_pods_come_and_go() -> None:
    balancer = RoundRobin()
    assert picks(balancer, pods(1, 1, 1), 2) == [0, 1]
    # Pod 1 fails: the rotation carries on with 2, not back at 0.
    without_1 = [Candidate(0), Candidate(1, state=PodState.DOWN), Candidate(2)]
    assert picks(balancer, without_1, 3) == [2, 0, 2]
    # Pod 5 joins after 2: it is next, and nobody is skipped.
    assert picks(balancer, [*pods(1, 1, 1), Candidate(5)], 5) == [5, 0, 1, 2, 5]


# --- least connections -----------------------------------------------------------------------


def test_least_connections_picks_fewest_connections_per_unit_of_weight() -> None:
    candidates = [
        Candidate(0, weight=1, active_connections=3),
        Candidate(1, weight=4, active_connections=8),  # 2 per unit of weight
        Candidate(2, weight=2, active_connections=5),  # 2.5 per unit of weight
    ]
    assert LeastConnections().pick(candidates, "u") == 1


def test_least_connections_counts_requests_in_flight_where_connections_are_not_reported() -> None:
    # Envoys' load reports carry requests in flight, not connections.
    candidates = [
        Candidate(0, active_requests=6),
        Candidate(1, active_connections=2, active_requests=1),
        Candidate(2, active_connections=4),
    ]
    assert LeastConnections().pick(candidates, "u") == 1


def test_least_connections_breaks_ties_by_bound_users_then_lowest_index() -> None:
    tied = [Candidate(3, active_connections=2), Candidate(1, active_connections=2)]
    assert LeastConnections().pick(tied, "u") == 1
    fewer_users = [
        Candidate(1, active_connections=2, bound_users=5),
        Candidate(3, active_connections=2),
    ]
    assert LeastConnections().pick(fewer_users, "u") == 3


def test_least_connections_spreads_a_burst_before_connection_counts_update() -> None:
    assert {
        c.index: c.bound_users for c in place(LeastConnections(), pods(1, 1, 1), ["a", "b", "c"])
    } == {
        0: 1,
        1: 1,
        2: 1,
    }


# --- smooth weighted round robin -------------------------------------------------------------


def test_smooth_wrr_interleaves_picks_like_nginx() -> None:
    assert picks(SmoothWeightedRoundRobin(), pods(5, 1, 1), 7) == [0, 0, 1, 0, 2, 0, 0]


@settings(max_examples=80, deadline=None)
@given(weights=st.lists(st.integers(1, 10), min_size=1, max_size=8))
def test_smooth_wrr_gives_each_pod_its_exact_share_in_every_window(weights: list[int]) -> None:
    window = sum(weights)
    sequence = picks(SmoothWeightedRoundRobin(), pods(*weights), 3 * window)
    for start in range(len(sequence) - window + 1):
        counts = Counter(sequence[start : start + window])
        assert [counts[i] for i in range(len(weights))] == weights


def test_smooth_wrr_restarts_its_cycle_when_a_weight_changes() -> None:
    balancer = SmoothWeightedRoundRobin()
    picks(balancer, pods(5, 1, 1), 3)  # stop in the middle of a cycle
    assert picks(balancer, pods(1, 1, 2), 4) == [2, 0, 1, 2]


def test_smooth_wrr_restarts_its_cycle_when_the_eligible_set_changes() -> None:
    balancer = SmoothWeightedRoundRobin()
    picks(balancer, pods(5, 1, 1), 3)
    candidates = [*pods(5, 1), Candidate(2, weight=1, state=PodState.DRAINING)]
    assert picks(balancer, candidates, 6) == [0, 0, 0, 1, 0, 0]


# --- least response time ---------------------------------------------------------------------


def test_least_response_time_picks_the_fastest_pod() -> None:
    candidates = [Candidate(0, response_time_ms=40.0), Candidate(1, response_time_ms=12.5)]
    assert LeastResponseTime().pick(candidates, "u") == 1


def test_least_response_time_weighs_speed_by_how_busy_a_pod_is() -> None:
    candidates = [
        Candidate(0, response_time_ms=10.0, active_requests=9),  # 10 * 10 / 1 = 100
        Candidate(1, response_time_ms=30.0, active_requests=1),  # 30 * 2 / 1 = 60
        Candidate(2, weight=4, response_time_ms=50.0, active_requests=3),  # 50 * 4 / 4 = 50
    ]
    assert LeastResponseTime().pick(candidates, "u") == 2
    assert LeastResponseTime(scale_by_load=False).pick(candidates, "u") == 0


def test_least_response_time_spreads_users_before_any_pod_reports() -> None:
    spread = place(LeastResponseTime(), pods(1, 1, 1), ["a", "b", "c", "d"])
    assert [c.bound_users for c in spread] == [2, 1, 1]


# --- power of two choices --------------------------------------------------------------------


def test_power_of_two_takes_the_less_busy_of_two_pods() -> None:
    candidates = [Candidate(0, active_requests=4), Candidate(1, weight=3, active_requests=9)]
    assert set(picks(PowerOfTwoChoices(random.Random(1)), candidates, 30)) == {1}


def test_power_of_two_never_picks_the_busiest_pod() -> None:
    candidates = [Candidate(i, active_requests=r) for i, r in enumerate([3, 9, 0, 5])]
    assert set(picks(PowerOfTwoChoices(random.Random(1)), candidates, 300)) == {0, 2, 3}


def test_power_of_two_draws_pods_in_proportion_to_weight() -> None:
    # Pod 2 wins whenever it is drawn: weight 8 of 10 draws it in ~98% of pairs
    # (2 in 3 if weight were ignored).
    candidates = [
        Candidate(0, active_requests=2),
        Candidate(1, active_requests=1),
        Candidate(2, weight=8),
    ]
    chosen = Counter(picks(PowerOfTwoChoices(random.Random(5)), candidates, 2000))
    assert chosen[0] == 0
    assert chosen[2] / 2000 > 0.95


def test_power_of_two_is_reproducible_with_a_seeded_rng() -> None:
    candidates = [Candidate(i, active_requests=i % 2) for i in range(8)]
    first = picks(PowerOfTwoChoices(random.Random(42)), candidates, 100)
    assert first == picks(PowerOfTwoChoices(random.Random(42)), candidates, 100)
    assert len(set(first)) > 2


# --- bounded-load consistent hashing ---------------------------------------------------------


@FAST
@given(
    n_pods=st.integers(1, 8),
    n_users=st.integers(0, 150),
    factor=st.sampled_from([1.0, 1.1, 1.25, 1.5, 2.0]),
    salt=st.text(max_size=4),
)
def test_bounded_hash_never_exceeds_ceil_of_factor_times_average(
    n_pods: int, n_users: int, factor: float, salt: str
) -> None:
    balancer = BoundedLoadHash(factor)
    candidates = pods(*[1] * n_pods)
    for placed in range(1, n_users + 1):
        candidates = place(balancer, candidates, [f"{salt}-{placed}"])
        average = Fraction(placed, n_pods)
        assert max(c.bound_users for c in candidates) <= math.ceil(Fraction(str(factor)) * average)


@FAST
@given(
    weights=st.lists(st.integers(1, 10), min_size=1, max_size=6),
    n_users=st.integers(0, 120),
)
def test_bounded_hash_keeps_each_pod_within_its_weighted_capacity(
    weights: list[int], n_users: int
) -> None:
    balancer = BoundedLoadHash(1.25)
    candidates = pods(*weights)
    for placed in range(1, n_users + 1):
        candidates = place(balancer, candidates, [f"user-{placed}"])
        for c in candidates:
            assert c.bound_users <= math.ceil(Fraction(5, 4) * placed * c.weight / sum(weights))


def test_bounded_hash_is_the_same_on_two_instances() -> None:
    uids = [f"user-{i}" for i in range(300)]
    candidates = [Candidate(i, weight=1 + i % 3, bound_users=i) for i in range(6)]
    one, two = BoundedLoadHash(), BoundedLoadHash()
    assert [one.pick(candidates, u) for u in uids] == [two.pick(candidates, u) for u in uids]


def test_bounded_hash_does_not_depend_on_the_python_hash_seed() -> None:
    script = (
        "from controlplane.balancer import BoundedLoadHash, Candidate\n"
        "pods = [Candidate(i, weight=1 + i % 3) for i in range(5)]\n"
        "print([BoundedLoadHash().pick(pods, f'user-{i}') for i in range(200)])\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_bounded_hash_placement_is_pinned_across_releases() -> None:
    # Replicas of different versions run side by side during an upgrade: they must agree.
    assert stable_hash("alice") == 0x4DEAEC0CCE54DA89
    candidates = pods(1, 2, 3, 1)
    uids = ("alice", "bob", "carol", "dave", "erin", "frank")
    assert [BoundedLoadHash().pick(candidates, u) for u in uids] == [3, 2, 1, 1, 1, 3]


def test_bounded_hash_moves_only_the_users_of_a_pod_that_leaves() -> None:
    balancer = BoundedLoadHash()
    uids = [f"user-{i}" for i in range(1000)]
    before = {u: balancer.pick(pods(1, 1, 1, 1, 1), u) for u in uids}
    without_3 = [*pods(1, 1, 1), Candidate(3, state=PodState.DOWN), Candidate(4)]
    after = {u: balancer.pick(without_3, u) for u in uids}
    moved = {u for u in uids if before[u] != after[u]}
    assert moved == {u for u in uids if before[u] == 3}
    assert moved  # pod 3 did hold users


def test_bounded_hash_shares_users_in_proportion_to_weight() -> None:
    balancer = BoundedLoadHash()
    counts = Counter(balancer.pick(pods(1, 3), f"user-{i}") for i in range(4000))
    assert 0.70 < counts[1] / 4000 < 0.80


def test_bounded_hash_passes_over_a_pod_that_is_full() -> None:
    balancer = BoundedLoadHash(1.25)
    home = balancer.pick(pods(1, 1, 1, 1), "alice")
    # 6 users bound to 4 equal pods: capacity is ceil(1.25 * 7 / 4) = 3, and alice's pod has 3.
    full = [Candidate(i, bound_users=3 if i == home else 1) for i in range(4)]
    assert balancer.pick(full, "alice") != home


@pytest.mark.parametrize("factor", [0.9, float("nan"), float("inf")])
def test_bounded_hash_rejects_a_balance_factor_that_is_not_a_number_of_at_least_one(
    factor: float,
) -> None:
    with pytest.raises(InvalidInput):
        BoundedLoadHash(factor)
