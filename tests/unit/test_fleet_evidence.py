"""Weighing the fleet's load reports: when a pod is failing, and how loaded it is."""

from __future__ import annotations

from controlplane.domain.fleet_evidence import (
    EndpointLoad,
    EvidenceRules,
    FailingEndpoint,
    FleetEvidence,
)

POD = ("demo/echo", "10.0.0.1:8080")
OTHER = ("demo/echo", "10.0.0.2:8080")


def load(
    successes: int = 0, errors: int = 0, in_flight: int = 0, endpoint: tuple[str, str] = POD
) -> EndpointLoad:
    return EndpointLoad(*endpoint, successes=successes, errors=errors, in_flight=in_flight)


def test_a_pod_every_envoy_fails_on_is_failing_with_the_evidence() -> None:
    evidence = FleetEvidence(EvidenceRules(min_errors=2))
    assert evidence.report("a", [load(errors=1)]) == []  # one error is not enough
    assert evidence.report("b", [load(errors=2)]) == [FailingEndpoint(*POD, 2, 0, 3)]


def test_a_failing_pod_is_reported_once_until_it_serves_again() -> None:
    evidence = FleetEvidence()
    assert evidence.report("a", [load(errors=5)])
    assert evidence.report("a", [load(errors=5)]) == []
    assert evidence.report("a", [load(successes=5)]) == []
    assert evidence.report("a", [load(errors=5)]) == [FailingEndpoint(*POD, 1, 0, 5)]


def test_one_envoy_failing_where_the_others_succeed_is_that_envoys_problem() -> None:
    evidence = FleetEvidence()
    evidence.report("a", [load(successes=10)])
    evidence.report("b", [load(successes=10)])
    assert evidence.report("c", [load(errors=50)]) == []


def test_more_envoys_failing_than_serving_fail_the_pod() -> None:
    evidence = FleetEvidence()
    evidence.report("a", [load(successes=10)])
    evidence.report("b", [load(errors=3)])
    assert evidence.report("c", [load(errors=3)]) == [FailingEndpoint(*POD, 2, 1, 6)]


def test_mostly_successful_requests_are_a_serving_pod() -> None:
    evidence = FleetEvidence(EvidenceRules(error_ratio=0.5, min_errors=1))
    assert evidence.report("a", [load(successes=9, errors=4)]) == []
    assert evidence.report("a", [load(successes=4, errors=4)]) != []


def test_an_envoy_that_sent_no_request_has_no_opinion() -> None:
    evidence = FleetEvidence()
    evidence.report("a", [load(successes=10)])
    evidence.report("a", [])  # its next interval: nothing sent to the pod
    assert evidence.report("b", [load(errors=3)]) == [FailingEndpoint(*POD, 1, 0, 3)]


def test_a_gone_envoy_no_longer_speaks_for_the_pod() -> None:
    evidence = FleetEvidence()
    evidence.report("a", [load(successes=10)])
    assert evidence.report("b", [load(errors=3)]) == []
    assert evidence.forget("a") == [FailingEndpoint(*POD, 1, 0, 3)]


def test_requests_in_flight_are_summed_over_the_envoys_latest_reports() -> None:
    evidence = FleetEvidence()
    evidence.report("a", [load(in_flight=3), load(in_flight=1, endpoint=OTHER)])
    evidence.report("b", [load(in_flight=4)])
    evidence.report("a", [load(in_flight=2)])  # replaces a's previous report
    assert evidence.in_flight(POD) == 6
    assert evidence.in_flight(OTHER) == 0
    evidence.forget("a")
    evidence.forget("b")
    assert evidence.in_flight(POD) == 0
    assert evidence.endpoints() == []
