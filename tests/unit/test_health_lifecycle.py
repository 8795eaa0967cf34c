"""The pod health lifecycle, signal by signal."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controlplane.domain import FAILED, HealthSignal, PodHealth, PodState, Thresholds, apply_signal

T = Thresholds(healthy=2, unhealthy=3)


def run(signals: list[HealthSignal], start: PodState = PodState.HEALTHY, now: float = 0.0):  # type: ignore[no-untyped-def]
    health = PodHealth(state=start)
    transitions = []
    for i, signal in enumerate(signals):
        transition = apply_signal(health, signal, now + i, T)
        transitions.append(transition)
        health = transition.health
    return transitions


def test_one_failed_check_makes_a_pod_suspect_and_a_pass_makes_it_healthy() -> None:
    a, b = run([HealthSignal.CHECK_FAILED, HealthSignal.CHECK_PASSED])
    assert a.health.state is PodState.SUSPECT
    assert b.health.state is PodState.HEALTHY
    assert not a.failed


def test_unhealthy_threshold_failures_fail_the_pod_once() -> None:
    transitions = run([HealthSignal.CHECK_FAILED] * 5)
    assert [t.health.state for t in transitions] == [
        PodState.SUSPECT, PodState.SUSPECT, PodState.DOWN, PodState.DOWN, PodState.DOWN
    ]  # fmt: skip
    assert [t.failed for t in transitions] == [False, False, True, False, False]


def test_an_outlier_ejection_fails_a_healthy_pod_at_once() -> None:
    [t] = run([HealthSignal.EJECTED])
    assert t.health.state is PodState.EJECTED
    assert t.failed


def test_a_failed_pod_recovers_through_recovering_after_healthy_threshold_passes() -> None:
    transitions = run([HealthSignal.FAIL, HealthSignal.CHECK_PASSED, HealthSignal.CHECK_PASSED])
    assert [t.health.state for t in transitions] == [
        PodState.DOWN, PodState.RECOVERING, PodState.HEALTHY
    ]  # fmt: skip
    assert [t.recovered for t in transitions] == [False, False, True]


def test_a_failure_while_recovering_goes_back_down_without_a_second_failover() -> None:
    transitions = run([HealthSignal.FAIL, HealthSignal.CHECK_PASSED, HealthSignal.CHECK_FAILED])
    assert transitions[-1].health.state is PodState.DOWN
    assert not transitions[-1].failed


def test_envoy_unejecting_counts_as_one_pass_not_a_recovery() -> None:
    transitions = run([HealthSignal.EJECTED, HealthSignal.UNEJECTED])
    assert transitions[-1].health.state is PodState.RECOVERING


def test_a_pod_envoy_ejected_passes_no_check_into_health_before_envoy_unejects_it() -> None:
    passed = [HealthSignal.CHECK_PASSED] * 5
    transitions = run([HealthSignal.EJECTED, *passed, HealthSignal.UNEJECTED])
    assert [t.health.state for t in transitions] == [
        PodState.EJECTED, *[PodState.RECOVERING] * 5, PodState.HEALTHY
    ]  # fmt: skip
    assert transitions[-1].recovered


def test_a_pod_envoy_ejected_is_still_held_out_after_falling_back_down() -> None:
    signals = [HealthSignal.EJECTED, HealthSignal.CHECK_PASSED, HealthSignal.CHECK_FAILED]
    transitions = run([*signals, HealthSignal.CHECK_PASSED, HealthSignal.CHECK_PASSED])
    assert transitions[2].health.state is PodState.DOWN
    assert transitions[-1].health.state is PodState.RECOVERING


def test_a_pod_that_failed_its_checks_needs_no_word_from_envoy() -> None:
    transitions = run([HealthSignal.FAIL, HealthSignal.CHECK_PASSED, HealthSignal.CHECK_PASSED])
    assert transitions[-1].health.ejected_at is None
    assert transitions[-1].health.state is PodState.HEALTHY


def test_an_operator_recover_overrides_envoys_ejection() -> None:
    [_, recover] = run([HealthSignal.EJECTED, HealthSignal.RECOVER])
    assert recover.health.state is PodState.HEALTHY
    assert recover.health.ejected_at is None


def test_a_lost_unejection_holds_a_pod_out_no_longer_than_envoys_longest_ejection() -> None:
    thresholds = Thresholds(healthy=1, max_ejection_s=60.0)
    ejected = apply_signal(PodHealth(), HealthSignal.EJECTED, 0.0, thresholds).health
    early = apply_signal(ejected, HealthSignal.CHECK_PASSED, 59.0, thresholds)
    late = apply_signal(early.health, HealthSignal.CHECK_PASSED, 61.0, thresholds)
    assert (early.health.state, late.health.state) == (PodState.RECOVERING, PodState.HEALTHY)


def test_a_flapping_pod_needs_more_passes_to_recover() -> None:
    flaps = [HealthSignal.FAIL, HealthSignal.CHECK_PASSED, HealthSignal.CHECK_PASSED] * 2
    transitions = run([*flaps, HealthSignal.FAIL] + [HealthSignal.CHECK_PASSED] * 5)
    states = [t.health.state for t in transitions[-5:]]
    # Third failure within the flap window: 3 x healthy_threshold = 6 passes, not 2.
    assert states == [PodState.RECOVERING] * 5


def test_checks_never_end_a_drain_but_a_dead_draining_pod_fails() -> None:
    passes = run([HealthSignal.DRAIN, HealthSignal.CHECK_PASSED, HealthSignal.CHECK_PASSED])
    assert passes[-1].health.state is PodState.DRAINING
    dies = run([HealthSignal.DRAIN] + [HealthSignal.CHECK_FAILED] * 3)
    assert dies[-1].health.state is PodState.DOWN
    assert dies[-1].failed


def test_a_drain_rate_lasts_while_the_pod_drains_and_is_forgotten_when_it_stops() -> None:
    draining = PodHealth(state=PodState.DRAINING, drain_rate=2.0)
    for signal in (HealthSignal.DRAIN, HealthSignal.CHECK_PASSED, HealthSignal.CHECK_FAILED):
        assert apply_signal(draining, signal, 1.0, T).health.drain_rate == 2.0
    for signal in (HealthSignal.RECOVER, HealthSignal.FAIL, HealthSignal.EJECTED):
        assert apply_signal(draining, signal, 1.0, T).health.drain_rate is None


def test_operator_recover_makes_any_pod_healthy_at_once() -> None:
    for state in PodState:
        [t] = run([HealthSignal.RECOVER], start=state)
        assert t.health.state is PodState.HEALTHY
        assert t.recovered is (state is not PodState.HEALTHY)


@given(st.sampled_from(list(PodState)), st.lists(st.sampled_from(list(HealthSignal)), max_size=30))
def test_a_pod_fails_only_when_it_enters_a_failed_state_from_a_serving_one(
    start: PodState, signals: list[HealthSignal]
) -> None:
    for t in run(signals, start=start):
        entered = t.before not in FAILED | {PodState.RECOVERING} and t.health.state in FAILED
        assert t.failed is entered


# -- a hung pod (accepts connections, answers nothing) is not a dead one ----------------------

HANG = Thresholds(healthy=2, unhealthy=3, hang_grace_s=10.0, fence_s=16.0)


def hang(signals: list[tuple[float, HealthSignal]], start: PodState = PodState.HEALTHY):  # type: ignore[no-untyped-def]
    health = PodHealth(state=start)
    transitions = []
    for at, signal in signals:
        transition = apply_signal(health, signal, at, HANG)
        transitions.append(transition)
        health = transition.health
    return transitions


def test_a_pod_that_times_out_keeps_its_users_through_the_grace() -> None:
    transitions = hang([(t, HealthSignal.CHECK_TIMED_OUT) for t in (0.0, 1.0, 2.0, 9.0)])
    assert [t.health.state for t in transitions] == [PodState.SUSPECT] * 4
    assert not any(t.failed for t in transitions)
    assert transitions[-1].health.hung_since == 0.0


def test_a_hung_pod_that_answers_again_is_healthy_with_nobody_moved() -> None:
    *_, passed = hang([(0.0, HealthSignal.CHECK_TIMED_OUT), (9.0, HealthSignal.CHECK_TIMED_OUT),
                       (9.5, HealthSignal.CHECK_PASSED)])  # fmt: skip
    assert passed.health.state is PodState.HEALTHY
    assert passed.health.hung_since is None
    # A later hang is given its whole grace again.
    [again] = hang([(30.0, HealthSignal.CHECK_TIMED_OUT)], start=passed.health.state)
    assert not again.failed


def test_a_pod_hung_past_the_grace_fails_once_fenced_for_the_route_timeout() -> None:
    signals = [(t, HealthSignal.CHECK_TIMED_OUT) for t in (0.0, 5.0, 10.0, 11.0)]
    transitions = hang(signals)
    assert [t.failed for t in transitions] == [False, False, True, False]
    failed = transitions[2].health
    assert failed.state is PodState.DOWN
    assert failed.fenced_until == 10.0 + HANG.fence_s


def test_the_grace_needs_unhealthy_threshold_timeouts_too() -> None:
    transitions = hang([(0.0, HealthSignal.CHECK_TIMED_OUT), (20.0, HealthSignal.CHECK_TIMED_OUT)])
    assert not any(t.failed for t in transitions)


def test_a_refusal_is_a_death_even_while_hung_and_fails_over_unfenced() -> None:
    signals = [(0.0, HealthSignal.CHECK_TIMED_OUT), (1.0, HealthSignal.CHECK_TIMED_OUT),
               (2.0, HealthSignal.CHECK_FAILED)]  # fmt: skip
    *_, refused = hang(signals)
    assert refused.failed
    assert refused.health.fenced_until is None


def test_envoy_ejecting_a_pod_that_still_accepts_connections_waits_for_the_grace() -> None:
    first, late = hang([(0.0, HealthSignal.EJECTED_HUNG), (10.0, HealthSignal.EJECTED_HUNG)])
    assert first.health.state is PodState.SUSPECT
    assert not first.failed
    assert late.failed
    assert late.health.state is PodState.EJECTED
    assert late.health.fenced_until == 10.0 + HANG.fence_s


def test_the_fleets_requests_failing_on_a_silent_pod_wait_for_the_grace_too() -> None:
    first, late = hang(
        [(0.0, HealthSignal.REQUESTS_FAILING_HUNG), (10.0, HealthSignal.REQUESTS_FAILING_HUNG)]
    )
    assert first.health.state is PodState.SUSPECT
    assert late.failed
    assert late.health.state is PodState.DOWN
    assert late.health.fenced_until == 10.0 + HANG.fence_s


def test_a_fenced_pod_that_resumed_keeps_its_fence_when_it_fails_again() -> None:
    # Resumed, it answers what waited on it; Envoy's word on those failures comes after.
    signals = [(t, HealthSignal.CHECK_TIMED_OUT) for t in (0.0, 5.0, 10.0)]
    signals += [(10.5, HealthSignal.CHECK_PASSED), (11.0, HealthSignal.REQUESTS_FAILING)]
    *_, resumed, failed_again = hang(signals)
    assert resumed.health.state is PodState.RECOVERING
    assert failed_again.health.state is PodState.DOWN
    assert failed_again.health.fenced_until == 10.0 + HANG.fence_s


def test_a_hung_draining_pod_stays_draining_until_the_grace_ends() -> None:
    signals = [(t, HealthSignal.CHECK_TIMED_OUT) for t in (0.0, 1.0, 2.0, 10.0)]
    transitions = hang(signals, start=PodState.DRAINING)
    assert [t.health.state for t in transitions] == [PodState.DRAINING] * 3 + [PodState.DOWN]
    assert transitions[-1].failed


def test_without_a_grace_a_hang_fails_at_the_unhealthy_threshold_as_before() -> None:
    thresholds = Thresholds(healthy=2, unhealthy=3)
    health = PodHealth()
    failed = []
    for at in (0.0, 1.0, 2.0):
        transition = apply_signal(health, HealthSignal.CHECK_TIMED_OUT, at, thresholds)
        failed.append(transition.failed)
        health = transition.health
    assert failed == [False, False, True]
