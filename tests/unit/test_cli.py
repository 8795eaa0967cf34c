"""The CLI without a server: its help, its version, and how it words the API's answers."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from controlplane.cli import main, parser, render
from controlplane.cli.admin_client import error_message

NOW = 1_000_000.0
API_COMMANDS = [
    "status",
    "user",
    "users",
    "history",
    "envoys",
    "migrate",
    "drain",
    "recover",
    "fail",
]


def pod(state: str = "draining", users: int = 3) -> dict[str, object]:
    return {"pod_index": 3, "address": "10.0.0.3:8080", "state": state, "bound_users": users}


def test_help_is_plain_text_naming_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out
    for command in ["serve", "demo", *API_COMMANDS]:
        assert f"\n    {command} " in out


# Each API command with its positional arguments.
API_COMMANDS = {
    "status": [], "user": ["alice"], "users": ["3"], "history": [], "envoys": [],
    "migrate": ["alice", "1"], "drain": ["3"], "recover": ["3"], "fail": ["3"],
    "register": ["--host", "10.0.0.3", "--port", "8080"],
}  # fmt: skip


@pytest.mark.parametrize(("command", "positional"), API_COMMANDS.items())
def test_every_api_command_takes_json(command: str, positional: list[str]) -> None:
    assert parser().parse_args([command, *positional, "--json"]).json is True
    assert parser().parse_args([command, *positional]).json is False


def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"stateful-route {version('stateful-route')}\n"


def test_ages_read_as_seconds_minutes_hours_days() -> None:
    assert [render.ago(NOW - s, NOW) for s in (0, 59, 61, 3600 * 5, 86400 * 2)] == [
        "0s ago", "59s ago", "1m ago", "5h ago", "2d ago",
    ]  # fmt: skip
    assert render.ago(None, NOW) == "never"


def test_an_event_says_how_many_users_moved_and_where() -> None:
    event = {
        "type": "POD_FAILURE", "pod": 1, "affected_users": 7, "reason": "operator",
        "to_pods": {"2": 3, "0": 4},
    }  # fmt: skip
    assert render.event_line(event) == (
        "POD_FAILURE    pod=1 users=7 (4 to pod 0, 3 to pod 2) operator"
    )
    assert render.pod_change("fail", {"pod": pod("down", 0), "failover": event}) == [
        "pod 3 (10.0.0.3:8080) is down: it takes no new users and keeps none",
        "POD_FAILURE: 7 users moved (4 to pod 0, 3 to pod 2)",
    ]


def test_drain_and_recover_say_what_happens_to_the_pods_users() -> None:
    change = {"pod": pod(), "failover": None}
    assert render.pod_change("drain", change) == [
        "pod 3 (10.0.0.3:8080) is draining: no new users; its 3 bound users stay until idle"
    ]
    assert render.pod_change("drain", change, move_users_per_s=50.0) == [
        "pod 3 (10.0.0.3:8080) is draining: no new users; its 3 bound users move to other pods "
        "at 50/s"
    ]
    assert render.pod_change("recover", {"pod": pod("healthy", 1), "failover": None}) == [
        "pod 3 (10.0.0.3:8080) is healthy: it takes new users again; 1 bound user on it"
    ]
    empty = {"pod": pod("down", 0), "failover": None}
    assert render.pod_change("fail", empty) == [
        "pod 3 (10.0.0.3:8080) is down: it takes no new users and keeps none "
        "(it had no users to move)"
    ]


def test_a_page_of_users_names_the_next_pages_command() -> None:
    page = {"pod": 3, "bound_users": 1200, "users": ["alice", "bob"], "next_cursor": 77}
    assert render.users("demo/echo", page, more="stateful-route users 3 --cursor 77") == [
        "pod 3 of demo/echo: 1200 bound users, 2 shown",
        "alice",
        "bob",
        "more: stateful-route users 3 --cursor 77",
    ]


def test_a_binding_says_when_it_was_made_and_last_used() -> None:
    binding = {"uid": "alice", "pod": 2, "bound_at": NOW - 300, "last_seen": NOW - 12}
    line = render.binding("demo/echo", binding, NOW)
    assert line.startswith("alice is on pod 2 of demo/echo; bound ")
    assert line.endswith(" (5m ago), last seen 12s ago")


def test_an_api_error_is_its_message_and_code() -> None:
    body = b'{"error": "unknown_pod", "detail": "pod 7 is not registered in demo/echo"}'
    assert error_message(404, body) == "pod 7 is not registered in demo/echo (404 unknown_pod)"
    issues = (
        b'{"error": "validation_error", "detail": [{"loc": ["pod"], "msg": "Input should be '
        b'a valid integer", "type": "int_type"}]}'
    )
    assert (
        error_message(422, issues) == "pod: Input should be a valid integer (422 validation_error)"
    )


def test_an_error_that_is_not_the_apis_shows_the_start_of_its_body() -> None:
    page = b"<html>\n<body>" + b"bad gateway " * 40 + b"</body></html>"
    message = error_message(502, page)
    assert message.startswith("the admin API answered 502: <html> <body>bad gateway")
    assert message.endswith("...")
    assert len(message) < 250
    assert error_message(500, b"") == "the admin API answered 500: (no body)"


def test_a_bad_admin_url_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--admin", "not-a-url"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: the admin API's URL 'not-a-url' is no URL")
    assert len(err.splitlines()) == 1


def test_a_lease_says_which_pod_and_how_long_it_lasts() -> None:
    lease = {"pod_index": 3, "ttl_s": 30.0, "pod": {**pod("healthy"), "name": "worker-3"}}
    assert render.lease(lease) == (
        "pod 3 (worker-3 10.0.0.3:8080) is healthy; its lease lasts 30 s unless renewed"
    )


def test_a_pod_given_by_name_shows_it_before_its_address_or_that_it_is_unresolved() -> None:
    assert render.place({"name": None, "address": "10.0.0.3:8080"}) == "10.0.0.3:8080"
    named = {"name": "echo-3.echo", "address": "10.0.0.3:8080"}
    assert render.place(named) == "echo-3.echo 10.0.0.3:8080"
    assert render.place({**named, "address": None}) == "echo-3.echo (unresolved)"
