"""The lease policy (domain/leases.py): a lapsed lease drains the pod, then fails it; a
renewal undoes only what the lease did."""

from __future__ import annotations

import pytest

from controlplane.domain import HealthSignal, PodHealth, PodState
from controlplane.domain.leases import RENEWED, after_lapse, after_renewal, lapsed_reason

DRAIN_S = 10.0


def health(state: PodState, reason: str = "") -> PodHealth:
    return PodHealth(state=state, reason=reason)


@pytest.mark.parametrize("state", [PodState.HEALTHY, PodState.SUSPECT, PodState.RECOVERING])
def test_a_lapsed_lease_drains_a_serving_pod_at_once(state: PodState) -> None:
    assert after_lapse(health(state), 0.0, DRAIN_S) is HealthSignal.DRAIN


def test_a_drained_pod_is_left_draining_until_the_drain_time_is_over() -> None:
    assert after_lapse(health(PodState.DRAINING), DRAIN_S - 0.1, DRAIN_S) is None
    assert after_lapse(health(PodState.DRAINING), DRAIN_S, DRAIN_S) is HealthSignal.FAIL


def test_a_lease_over_for_the_drain_time_fails_the_pod_whatever_it_was_doing() -> None:
    assert after_lapse(health(PodState.HEALTHY), DRAIN_S + 5, DRAIN_S) is HealthSignal.FAIL


@pytest.mark.parametrize("state", [PodState.DOWN, PodState.EJECTED])
def test_a_failed_pod_is_left_as_it_is(state: PodState) -> None:
    assert after_lapse(health(state), 100.0, DRAIN_S) is None


def test_a_renewal_undoes_the_drain_the_lapse_made() -> None:
    assert after_renewal(health(PodState.DRAINING, lapsed_reason(3.0))) is HealthSignal.RECOVER


def test_a_renewal_is_a_passed_check_of_a_pod_the_lapse_failed() -> None:
    signal = after_renewal(health(PodState.DOWN, lapsed_reason(12.0)))
    assert signal is HealthSignal.CHECK_PASSED
    assert after_renewal(health(PodState.RECOVERING, RENEWED)) is HealthSignal.CHECK_PASSED


@pytest.mark.parametrize(
    "pod",
    [
        health(PodState.HEALTHY),
        health(PodState.DRAINING, "operator"),
        health(PodState.DOWN, "health check answered 503"),
        health(PodState.RECOVERING, ""),
    ],
)
def test_a_renewal_leaves_health_the_lease_did_not_make(pod: PodHealth) -> None:
    assert after_renewal(pod) is None
