"""The pure rules the route manager applies when placing users and folding load reports."""

from __future__ import annotations

import pytest

from controlplane.domain import LoadReport, Pod, PodHealth, PodState
from controlplane.domain.placement import SETTLE_S, sitting_out


def pod(index: int, state: PodState = PodState.HEALTHY, recovered_at: float | None = None) -> Pod:
    health = PodHealth(state=state, recovered_at=recovered_at)
    return Pod(index=index, host="10.0.0.1", port=9000 + index, health=health)


def test_a_pod_recovered_within_the_settle_sits_out_while_a_healthy_pod_can_take_the_user() -> None:
    pods = {0: pod(0, recovered_at=100.0), 1: pod(1)}
    assert sitting_out(pods, 100.0 + SETTLE_S / 2) == {0}
    assert sitting_out(pods, 100.0 + SETTLE_S) == frozenset()


def test_a_settling_pod_stays_a_candidate_when_no_other_pod_is_healthy() -> None:
    pods = {0: pod(0, recovered_at=100.0), 1: pod(1, PodState.SUSPECT)}
    assert sitting_out(pods, 100.5) == frozenset()


def test_response_times_average_four_fifths_old_one_fifth_new_after_the_first() -> None:
    first = LoadReport().with_response_time(50.0, at=1.0)
    assert (first.response_time_ms, first.reported_at) == (50.0, 1.0)
    assert first.with_response_time(100.0, at=2.0).response_time_ms == pytest.approx(60.0)
