"""`stateful-route demo` as an operator runs it: a subprocess, its output, the CLI against it.

One demo per module (about 4 s to start); the tests run in file order and the last one stops
it with SIGINT and checks that every process it started is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controlplane.runtime.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.envoy

TOKEN = "cli-demo-test-token-0123456789"
SERVICE_PATH = "/api/v1/services/demo/echo"
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


@dataclass
class Demo:
    process: subprocess.Popen[str]
    proxy_port: int
    admin_port: int
    banner: str

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def ask(self, uid: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.proxy_port}/", headers={"x-uid": uid}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(self.admin + path, timeout=5) as response:
            return json.loads(response.read())

    def pod_state(self, index: int) -> str:
        pods = {p["pod_index"]: p for p in self.api(f"{SERVICE_PATH}/pods")}
        state: str = pods[index]["state"]
        return state


def cli(*args: str) -> list[str]:
    """``stateful-route`` as installed beside this interpreter, as an operator types it."""
    script = Path(sys.executable).parent / "stateful-route"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "controlplane.cli"]
    return [*command, *args]


# The CLI reads its admin URL and token from these: the tests pass them explicitly.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("STATEFUL_ROUTE_")}


def stateful_route(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(*args), capture_output=True, text=True, timeout=timeout_s, cwd=REPO, env=CLEAN_ENV
    )


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc: the demo starts each part in its own session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_demo(process: subprocess.Popen[str]) -> None:
    """SIGINT (the operator's Ctrl-C); SIGKILL only if it does not stop in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_demo(*args: str) -> subprocess.Popen[str]:
    """``stateful-route demo`` with ``args``, its output (both streams) on a pipe."""
    return subprocess.Popen(
        cli("demo", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env=CLEAN_ENV,
    )


@contextlib.contextmanager
def running_demo() -> Iterator[Demo]:
    """``stateful-route demo`` on free ports, once it printed its banner; stopped at the end."""
    proxy_port, admin_port = free_port(), free_port()
    process = start_demo(
        "--proxy-port", str(proxy_port), "--admin-port", str(admin_port), "--token", TOKEN
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not any(line.strip() == "ready." for line in lines):
            line = process.stdout.readline()
            if not line or time.monotonic() > deadline:
                pytest.fail("the demo did not get ready:\n" + "".join(lines))
            lines.append(line)
        # The banner ends with the Ctrl-C hint.
        while "Ctrl-C" not in lines[-1]:
            lines.append(process.stdout.readline())
        yield Demo(process, proxy_port, admin_port, "".join(lines))
    finally:
        stop_demo(process)


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    with running_demo() as demo:
        yield demo


def test_the_banner_names_the_proxy_admin_token_and_next_steps(demo: Demo) -> None:
    assert f"http://127.0.0.1:{demo.proxy_port}/" in demo.banner
    assert f"http://127.0.0.1:{demo.admin_port}/api/v1/services" in demo.banner
    assert TOKEN in demo.banner
    assert "curl -H 'x-uid: alice'" in demo.banner
    assert f"stateful-route status --admin http://127.0.0.1:{demo.admin_port}" in demo.banner


def test_ready_means_the_control_plane_holds_every_pod_healthy(demo: Demo) -> None:
    # Read at once: the banner itself promises this (issue 17: a health round that ran
    # before the pods listened had them all suspect a second after "ready.").
    assert [demo.pod_state(i) for i in range(4)] == ["healthy"] * 4


def test_a_user_stays_on_one_pod_and_its_count_grows(demo: Demo) -> None:
    answers = [demo.ask("alice") for _ in range(5)]
    assert {a["pod"] for a in answers} == {answers[0]["pod"]}
    assert [a["count"] for a in answers] == [1, 2, 3, 4, 5]
    assert demo.api(f"{SERVICE_PATH}/users/alice")["pod"] == answers[0]["pod"]


def status_rows(demo: Demo) -> dict[int, list[str]]:
    """``stateful-route status``'s pod rows of demo/echo, by pod index."""
    result = stateful_route("status", "--admin", demo.admin)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "demo/echo"
    assert lines[1].split() == ["pod", "address", "state", "weight", "users", "load"]
    return {int(line.split()[0]): line.split() for line in lines[2:6]}


def test_status_shows_every_pod_and_alice_counts_on_hers(demo: Demo) -> None:
    pod = demo.api(f"{SERVICE_PATH}/users/alice")["pod"]

    def all_healthy() -> dict[int, list[str]]:
        rows = status_rows(demo)
        return rows if all(row[2] == "healthy" for row in rows.values()) else {}

    # A busy machine may time one health check out: wait for the pods' state, not a moment.
    rows = wait_until(all_healthy, "every pod healthy in status")
    assert sorted(rows) == [0, 1, 2, 3]
    assert int(rows[pod][4]) >= 1  # alice (and perhaps the demo's own start-up probe)


def test_draining_a_pod_shows_in_status_and_the_api(demo: Demo) -> None:
    pod = demo.api(f"{SERVICE_PATH}/users/alice")["pod"]
    unauthorised = stateful_route("drain", "--admin", demo.admin, str(pod))
    assert unauthorised.returncode == 1
    assert unauthorised.stderr.startswith("error: ")
    assert "(401 unauthorized)" in unauthorised.stderr
    assert len(unauthorised.stderr.splitlines()) == 1  # one line, no traceback
    assert demo.pod_state(pod) == "healthy"

    result = stateful_route("drain", "--admin", demo.admin, "--token", TOKEN, str(pod))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"pod {pod} (")  # a sentence, not JSON
    assert "is draining: no new users;" in result.stdout
    assert demo.pod_state(pod) == "draining"
    status = stateful_route("status", "--admin", demo.admin).stdout.splitlines()
    row = next(line.split() for line in status[2:] if line.split()[0] == str(pod))
    assert row[2] == "draining"
    # A draining pod keeps its users.
    assert demo.ask("alice") == {"pod": pod, "uid": "alice", "count": 6}


def test_migrate_recover_and_fail_through_the_cli(demo: Demo) -> None:
    demo.ask("bob")
    before = demo.api(f"{SERVICE_PATH}/users/bob")["pod"]
    target = next(i for i in range(4) if i != before and demo.pod_state(i) == "healthy")
    moved = stateful_route(
        "migrate", "--admin", demo.admin, "--token", TOKEN, "--json", "bob", str(target)
    )
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["pod"] == target
    wait_until(lambda: demo.ask("bob")["pod"] == target, "bob reaches its new pod")  # one push

    drained = next(i for i in range(4) if demo.pod_state(i) == "draining")
    recovered = stateful_route("recover", "--admin", demo.admin, "--token", TOKEN, str(drained))
    assert recovered.returncode == 0, recovered.stderr
    assert demo.pod_state(drained) == "healthy"

    failed = stateful_route("fail", "--admin", demo.admin, "--token", TOKEN, str(target))
    assert failed.returncode == 0, failed.stderr
    # The pod itself is alive: the demo's next health check may already have it recovering.
    assert demo.pod_state(target) in {"down", "recovering"}
    assert demo.api(f"{SERVICE_PATH}/users/bob")["pod"] != target  # bob moved off it
    assert "POD_FAILURE" in stateful_route("status", "--admin", demo.admin).stdout


def test_user_and_users_find_alice_on_her_pod(demo: Demo) -> None:
    pod = demo.api(f"{SERVICE_PATH}/users/alice")["pod"]
    user = stateful_route("user", "--admin", demo.admin, "alice")
    assert user.returncode == 0, user.stderr
    assert user.stdout.startswith(f"alice is on pod {pod} of demo/echo; bound ")
    users = stateful_route("users", "--admin", demo.admin, str(pod))
    assert users.returncode == 0, users.stderr
    assert "alice" in users.stdout.splitlines()[1:]
    envoys = stateful_route("envoys", "--admin", demo.admin, "--json")
    assert envoys.returncode == 0, envoys.stderr
    assert [envoy["transport"] for envoy in json.loads(envoys.stdout)] == ["rest"]


def test_the_compose_loadgen_finds_every_user_on_one_pod(demo: Demo) -> None:
    result = subprocess.run(
        [
            sys.executable, str(REPO / "deploy" / "loadgen.py"),
            "--url", f"http://127.0.0.1:{demo.proxy_port}/",
            "--users", "40", "--requests", "5", "--wait-s", "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "requests=200 failed=0 moved_users=0" in result.stdout


def test_a_killed_control_plane_is_started_again_and_says_so(demo: Demo) -> None:
    [plane] = [
        pid
        for pid in children_of(demo.process.pid)
        if b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    ]
    os.kill(plane, signal.SIGKILL)
    assert demo.process.stdout is not None
    said = [demo.process.stdout.readline() for _ in range(2)]
    assert "the control plane exited (code -9); restarting it in 0.5 s" in said[0]
    assert "the control plane is back" in said[1]
    assert demo.api("/healthz")["status"] == "ok"
    assert demo.ask("alice")["uid"] == "alice"


def test_a_second_demo_on_a_taken_proxy_port_refuses_clearly(demo: Demo) -> None:
    result = stateful_route(
        "demo", "--proxy-port", str(demo.proxy_port), "--admin-port", str(free_port())
    )
    assert result.returncode != 0
    assert f"port {demo.proxy_port} is taken" in result.stderr
    assert "--proxy-port" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_short_token_is_refused_before_anything_starts() -> None:
    result = stateful_route("demo", "--proxy-port", "0", "--admin-port", "0", "--token", "short")
    assert result.returncode != 0
    assert "--token must be at least 16 characters" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_ctrl_c_stops_every_process_the_demo_started(demo: Demo) -> None:
    children = children_of(demo.process.pid)
    # redis-server, the control plane, 4 pods, Envoy.
    assert len(children) == 7, children
    logs = Path(demo.banner.split("logs:", 1)[1].split()[0])
    assert (logs / "controlplane.log").exists()

    demo.process.send_signal(signal.SIGINT)
    output, _ = demo.process.communicate(timeout=20)
    assert demo.process.returncode == 0, output
    assert "stopping..." in output
    assert "Traceback" not in output
    assert [pid for pid in children if alive(pid)] == []
    assert not listening(demo.proxy_port)
    assert not listening(demo.admin_port)
    assert not logs.exists()  # its own working directory, removed


def test_ctrl_c_while_starting_leaves_nothing_behind() -> None:
    process = start_demo("--proxy-port", "0", "--admin-port", "0")
    assert process.stdout is not None
    try:
        # Interrupt once the pods are up and the control plane is starting.
        lines = [process.stdout.readline() for _ in range(4)]
        assert "control plane" in lines[-1], lines
        children = children_of(process.pid)
        assert children
        process.send_signal(signal.SIGINT)
        output = "".join(lines) + process.communicate(timeout=20)[0]
    finally:
        stop_demo(process)
    assert process.returncode == 130, output
    assert "stopped before the stack was ready" in output
    assert "Traceback" not in output
    assert [pid for pid in children if alive(pid)] == []


def test_ctrl_c_stops_everything_even_when_nobody_reads_the_output() -> None:
    # `stateful-route demo | head`, or a closed terminal: printing "stopping..." fails.
    with running_demo() as demo:
        children = children_of(demo.process.pid)
        assert demo.process.stdout is not None
        demo.process.stdout.close()
        demo.process.send_signal(signal.SIGINT)
        demo.process.wait(timeout=20)
    assert [pid for pid in children if alive(pid)] == []
    assert not listening(demo.proxy_port)
