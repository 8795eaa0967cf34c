"""Reading what Envoy writes about its hosts."""

from __future__ import annotations

import json
from pathlib import Path

from controlplane.domain import HealthSignal
from controlplane.signals.envoy_events import (
    EventLogTail,
    HostSignal,
    parse_health_event,
    parse_host_stats,
    parse_outlier_event,
    service_of,
)

EJECT = {
    "type": "CONSECUTIVE_5XX",
    "cluster_name": "demo/echo",
    "upstream_url": "127.0.0.1:9001",
    "action": "EJECT",
    "num_ejections": 1,
    "enforced": True,
}


def test_an_outlier_ejection_is_an_ejected_signal_and_an_unejection_a_pass() -> None:
    eject = parse_outlier_event(json.dumps(EJECT))
    assert eject == HostSignal(
        "demo/echo",
        "127.0.0.1:9001",
        HealthSignal.EJECTED,
        "envoy outlier detection: consecutive_5xx",
    )
    uneject = parse_outlier_event(json.dumps({**EJECT, "action": "UNEJECT"}))
    assert uneject is not None
    assert uneject.signal is HealthSignal.UNEJECTED


def test_garbage_and_unknown_lines_are_ignored() -> None:
    for line in ["", "not json", "[1, 2]", json.dumps({"action": "EJECT"})]:
        assert parse_outlier_event(line) is None
        assert parse_health_event(line) is None


def test_health_check_events_map_to_ejections_and_passes() -> None:
    host = {"socket_address": {"address": "10.0.0.7", "port_value": 8080}}
    eject = {
        "host": host,
        "cluster_name": "a/b",
        "eject_unhealthy_event": {"failure_type": "ACTIVE"},
    }
    healthy = {"host": host, "cluster_name": "a/b", "add_healthy_event": {"first_check": False}}
    assert parse_health_event(json.dumps(eject)) == HostSignal(
        "a/b", "10.0.0.7:8080", HealthSignal.EJECTED, "envoy health check: active"
    )
    parsed = parse_health_event(json.dumps(healthy))
    assert parsed is not None
    assert parsed.signal is HealthSignal.UNEJECTED


def test_host_stats_read_zero_stats_that_envoy_leaves_out() -> None:
    clusters = {
        "cluster_statuses": [
            {
                "name": "demo/echo",
                "host_statuses": [
                    {
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 9001}},
                        "stats": [{"name": "rq_active", "value": "3"}, {"name": "cx_active"}],
                        "health_status": {"failed_outlier_check": True},
                    }
                ],
            }
        ]
    }
    [stats] = parse_host_stats(clusters)
    assert (stats.address, stats.active_requests, stats.active_connections) == (
        "127.0.0.1:9001",
        3,
        0,
    )


def test_host_stats_read_the_requests_envoy_sent_each_host() -> None:
    host = {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 9001}},
        "stats": [{"name": "rq_total", "value": "1234"}],
    }
    clusters = {"cluster_statuses": [{"name": "demo/echo", "host_statuses": [host]}]}
    [stats] = parse_host_stats(clusters)
    assert stats.requests_total == 1234


def test_only_namespace_slash_name_clusters_are_services() -> None:
    assert service_of("demo/echo") == ("demo", "echo")
    assert service_of("stateful-route.miss-path") is None


def test_a_tail_reads_appended_complete_lines_and_survives_truncation(tmp_path: Path) -> None:
    log = tmp_path / "outlier.log"
    log.write_text("old line\n")
    tail = EventLogTail(log, parse_outlier_event, manager=None)  # type: ignore[arg-type]
    assert tail.read_new_lines() == []  # history is not replayed
    with log.open("a") as file:
        file.write('{"a": 1}\n{"b"')
    assert tail.read_new_lines() == ['{"a": 1}']
    with log.open("a") as file:
        file.write(": 2}\n")
    assert tail.read_new_lines() == ['{"b": 2}']
    log.write_text("new\n")  # rotated or truncated
    assert tail.read_new_lines() == ["new"]


def test_a_tail_of_a_file_that_appears_later_reads_it_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    tail = EventLogTail(log, parse_outlier_event, manager=None)  # type: ignore[arg-type]
    assert tail.read_new_lines() == []
    log.write_text("first\n")
    assert tail.read_new_lines() == ["first"]


def test_host_stats_say_why_envoy_ejected_a_host_but_not_what_eds_told_it() -> None:
    def host(flags: dict[str, object]) -> dict[str, object]:
        socket = {"socket_address": {"address": "127.0.0.1", "port_value": 9001}}
        return {"address": socket, "stats": [], "health_status": flags}

    statuses = [
        host({"failed_outlier_check": True, "eds_health_status": "HEALTHY"}),
        host({"failed_outlier_check": True, "failed_active_health_check": True}),
        host({"eds_health_status": "UNHEALTHY"}),
    ]
    clusters = {"cluster_statuses": [{"name": "demo/echo", "host_statuses": statuses}]}
    assert [s.ejected_for for s in parse_host_stats(clusters)] == [
        "failed_outlier_check",
        "failed_outlier_check,failed_active_health_check",
        "",
    ]
