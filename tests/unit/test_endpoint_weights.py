"""The load_balancing_weight each pod gets in Envoy's endpoint assignment."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.balancer import MAX_ENDPOINT_WEIGHT, endpoint_weights
from controlplane.domain import ACCEPTS_NEW_USERS, LoadReport, Pod, PodHealth, PodState

ENVOY_LOCALITY_LIMIT = 2**32 - 1


def pod(index: int = 0, weight: int = 1, load: int = 0, state: PodState = PodState.HEALTHY) -> Pod:
    return Pod(
        index=index,
        host="10.0.0.1",
        port=8080,
        weight=weight,
        health=PodHealth(state=state),
        load=LoadReport(load_state=load),
    )


def weight_of(weight: int = 1, load: int = 0, state: PodState = PodState.HEALTHY) -> int:
    return endpoint_weights([pod(7, weight, load, state)])[7]


any_pod = st.builds(
    pod,
    index=st.integers(0, 50),
    weight=st.integers(1, 1000),
    load=st.integers(0, 100),
    state=st.sampled_from(PodState),
)


@settings(max_examples=100, deadline=None)
@given(pods=st.lists(any_pod, max_size=10, unique_by=lambda p: p.index))
def test_every_pod_gets_an_integer_weight_envoy_accepts(pods: list[Pod]) -> None:
    weights = endpoint_weights(pods)
    assert set(weights) == {p.index for p in pods}
    assert all(isinstance(w, int) and 1 <= w <= MAX_ENDPOINT_WEIGHT for w in weights.values())


def test_the_heaviest_possible_locality_stays_under_envoys_limit() -> None:
    heaviest = weight_of(weight=1000, load=0, state=PodState.HEALTHY)
    assert heaviest <= MAX_ENDPOINT_WEIGHT
    assert MAX_ENDPOINT_WEIGHT * 4294 <= ENVOY_LOCALITY_LIMIT


def test_weight_is_capacity_times_headroom_times_health() -> None:
    assert weight_of(weight=3, load=40) == 3 * 60 * 2
    assert weight_of(weight=3, load=40, state=PodState.SUSPECT) == 3 * 60


def test_pod_zero_gets_a_weight_like_any_other() -> None:
    assert endpoint_weights([pod(0, weight=2), pod(1, weight=2)]) == {0: 400, 1: 400}


def test_pods_that_take_no_new_users_get_weight_one() -> None:
    for state in set(PodState) - ACCEPTS_NEW_USERS:
        assert weight_of(weight=1000, load=0, state=state) == 1


@given(
    weights=st.tuples(st.integers(1, 1000), st.integers(1, 1000)),
    load=st.integers(0, 100),
    state=st.sampled_from(sorted(ACCEPTS_NEW_USERS)),
)
def test_more_capacity_never_means_less_weight(
    weights: tuple[int, int], load: int, state: PodState
) -> None:
    small, large = sorted(weights)
    assert weight_of(weight=small, load=load, state=state) <= weight_of(
        weight=large, load=load, state=state
    )


@given(
    loads=st.tuples(st.integers(0, 100), st.integers(0, 100)),
    weight=st.integers(1, 1000),
    state=st.sampled_from(sorted(ACCEPTS_NEW_USERS)),
)
def test_more_headroom_never_means_less_weight(
    loads: tuple[int, int], weight: int, state: PodState
) -> None:
    light, heavy = sorted(loads)
    assert weight_of(weight=weight, load=light, state=state) >= weight_of(
        weight=weight, load=heavy, state=state
    )


def test_one_point_of_load_still_moves_traffic() -> None:
    assert weight_of(load=10) > weight_of(load=11)


def test_a_suspect_pod_gets_half_the_weight_of_an_equal_healthy_pod() -> None:
    healthy = weight_of(weight=5, load=30)
    assert weight_of(weight=5, load=30, state=PodState.SUSPECT) * 2 == healthy


def test_a_saturated_pod_that_accepts_users_still_outweighs_an_ejected_one() -> None:
    assert weight_of(load=100) > weight_of(state=PodState.EJECTED)
