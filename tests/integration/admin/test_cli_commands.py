"""``stateful-route``'s admin commands against an in-process admin app (real HTTP, real Redis).

``main`` runs in a worker thread, as the operator's process would, while the event loop serves
the app: each command's human answer, its ``--json`` answer, and its errors as one line.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

import pytest
from admin_support import BASE, NAMESPACE, SERVICE, TOKEN, Client, expect, given_service, route
from pytest_aiohttp import AiohttpServer

from controlplane.admin import AdminSettings, create_admin_app
from controlplane.cli import main
from controlplane.domain import PodState, ServiceKey
from controlplane.manager import StatefulRouteManager
from controlplane.runtime.ports import free_port
from controlplane.xds.clients import EnvoyView, Transport, TypeStatusView
from tests.support.waiting import eventually

CLUSTERS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
SCOPES = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
KEY = ServiceKey(NAMESPACE, SERVICE)


class Cli:
    """Runs ``stateful-route`` against one server; -> (exit status, stdout, stderr)."""

    def __init__(self, admin: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.admin = admin
        self.capsys = capsys

    async def __call__(self, *args: str, token: str | None = TOKEN) -> tuple[int, str, str]:
        # The command, then these defaults, then the test's own options (later ones win).
        argv = [args[0], "--admin", self.admin, "-n", NAMESPACE, "-s", SERVICE, *args[1:]]
        if token is not None:
            argv += ["--token", token]
        self.capsys.readouterr()
        status = await asyncio.to_thread(main, argv)
        out, err = self.capsys.readouterr()
        return status, out, err

    async def ok(self, *args: str) -> str:
        status, out, err = await self(*args)
        assert (status, err) == (0, ""), err
        return out

    async def json(self, *args: str) -> Any:
        return json.loads(await self.ok(*args, "--json"))

    async def fails(self, *args: str, token: str | None = TOKEN) -> str:
        """The one error line of a command that must fail."""
        status, out, err = await self(*args, token=token)
        assert status == 1
        assert out == ""
        assert "Traceback" not in err
        [line] = err.splitlines()
        assert line.startswith("error: ")
        return line


@pytest.fixture
def envoys() -> list[EnvoyView]:
    return []


@pytest.fixture
async def cli(
    manager: StatefulRouteManager,
    settings: AdminSettings,
    envoys: list[EnvoyView],
    capsys: pytest.CaptureFixture[str],
    aiohttp_server: AiohttpServer,
) -> Cli:
    server = await aiohttp_server(create_admin_app(manager, settings, envoys_view=lambda: envoys))
    return Cli(str(server.make_url("")).rstrip("/"), capsys)


async def test_status_prints_the_pods_and_with_json_the_apis_answers(
    cli: Cli, api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    alice = await route(api, "alice")
    lines = (await cli.ok("status")).splitlines()
    assert lines[0] == f"{NAMESPACE}/{SERVICE}"
    assert lines[1].split() == ["pod", "address", "state", "weight", "users", "load"]
    assert lines[2 + alice["pod_index"]].split()[4] == "1"
    answer = await cli.json("status")
    assert answer["pods"] == await expect(await api.get(f"{BASE}/pods"), 200)
    assert answer["failovers"] == []


async def test_drain_says_what_changed_and_json_is_the_apis_answer(
    cli: Cli, api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    pod = (await route(api, "alice"))["pod_index"]
    assert await cli.ok("drain", str(pod)) == (
        f"pod {pod} (10.0.0.{pod}:8080) is draining: no new users; its 1 bound user stays until "
        "idle\n"
    )
    answer = await cli.json("recover", str(pod))
    assert answer["pod"]["state"] == "healthy"
    assert answer["failover"] is None


async def test_fail_says_how_many_users_moved_and_where(
    cli: Cli, api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=3)
    placed = [await route(api, f"user-{n}") for n in range(30)]
    pod = placed[0]["pod_index"]
    on_it = sum(1 for p in placed if p["pod_index"] == pod)
    first, second = (await cli.ok("fail", str(pod), "--reason", "disk full")).splitlines()
    assert first.startswith(f"pod {pod} (10.0.0.{pod}:8080) is down")
    assert second.startswith(f"POD_FAILURE: {on_it} users moved (")
    event = (await cli.json("history", "--pod", str(pod), "--limit", "1"))[0]
    assert (event["type"], event["reason"], event["affected_users"]) == (
        "POD_FAILURE", "disk full", on_it,
    )  # fmt: skip
    where = ", ".join(
        f"{n} to pod {p}" for p, n in sorted((int(p), n) for p, n in event["to_pods"].items())
    )
    assert second == f"POD_FAILURE: {on_it} users moved ({where})"


async def test_migrate_says_where_the_user_was_and_is(
    cli: Cli, api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    before = (await route(api, "alice"))["pod_index"]
    after = 1 - before
    assert await cli.ok("migrate", "alice", str(after)) == (
        f"alice moved from pod {before} to pod {after}\n"
    )
    assert await cli.ok("migrate", "bob", "0") == "bob was not bound; now bound to pod 0\n"
    binding = await cli.json("migrate", "bob", "0")
    assert (binding["uid"], binding["pod"]) == ("bob", 0)


async def test_user_shows_the_binding(cli: Cli, api: Client, manager: StatefulRouteManager) -> None:
    await given_service(manager, pods=2)
    pod = (await route(api, "alice"))["pod_index"]
    out = await cli.ok("user", "alice")
    assert out.startswith(f"alice is on pod {pod} of {NAMESPACE}/{SERVICE}; bound ")
    assert (await cli.json("user", "alice"))["pod"] == pod
    assert await cli.fails("user", "nobody") == "error: user 'nobody' is not bound (404 not_bound)"


async def test_users_lists_a_pods_users_a_page_at_a_time_or_all(
    cli: Cli, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    uids = {f"user-{n:03}" for n in range(300)}
    keys = manager.store.keys(ServiceKey.of(NAMESPACE, SERVICE))
    await manager.store.bindings.bind_many(keys, [(u, 1) for u in uids], now=time.time())

    lines = (await cli.ok("users", "1", "--limit", "50")).splitlines()
    assert lines[0].startswith(f"pod 1 of {NAMESPACE}/{SERVICE}: 300 bound users, ")
    assert lines[-1].startswith("more: stateful-route users 1 --cursor ")
    page = lines[1:-1]
    assert len(page) >= 50
    assert set(page) <= uids

    everyone = (await cli.ok("users", "1", "--all", "--limit", "50")).splitlines()
    assert everyone[0] == f"pod 1 of {NAMESPACE}/{SERVICE}: 300 bound users"
    assert sorted(everyone[1:]) == sorted(uids)
    answer = await cli.json("users", "1", "--all")
    assert (len(answer["users"]), answer["next_cursor"]) == (300, None)
    assert (await cli.json("users", "0"))["users"] == []


async def test_history_filters_by_pod_and_type(
    cli: Cli, api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    assert await cli.ok("history") == f"{NAMESPACE}/{SERVICE}: no failover events (of those kept)\n"
    await cli.ok("drain", "0")
    await cli.ok("drain", "1")
    await cli.ok("recover", "1")
    lines = (await cli.ok("history")).splitlines()
    assert [line.split()[2:4] for line in lines] == [
        ["POD_RECOVERY", "pod=1"], ["POD_DRAINED", "pod=1"], ["POD_DRAINED", "pod=0"],
    ]  # fmt: skip
    drained = (await cli.ok("history", "--type", "pod_drained", "--pod", "1")).splitlines()
    assert [line.split()[2:4] for line in drained] == [["POD_DRAINED", "pod=1"]]
    assert len(await cli.json("history", "--limit", "2")) == 2


async def test_envoys_shows_what_each_acknowledged_and_its_last_nack(
    cli: Cli, envoys: list[EnvoyView]
) -> None:
    assert await cli.ok("envoys") == "no Envoy is connected\n"
    now = time.time()
    envoys.append(
        EnvoyView(
            node_id="envoy-a", node_group="edge", transport=Transport.DELTA,
            envoy_version="1.40.0", connected_since=now - 120, last_seen=now - 1,
            types={
                CLUSTERS: TypeStatusView(acked_version="7", acked_at=now - 60),
                SCOPES: TypeStatusView(
                    acked_version="41", acked_at=now - 5, nacked_version="42",
                    nack_message="bad\nscope", nacked_at=now - 2,
                ),
            },
        )
    )  # fmt: skip
    head, clusters, scopes = (await cli.ok("envoys")).splitlines()
    assert head.startswith("envoy-a  group=edge transport=delta envoy=1.40.0 connected 2m ago")
    assert clusters.split() == ["Cluster", "acked", "7", "(1m", "ago)"]
    assert scopes.split()[:4] == ["ScopedRouteConfiguration", "acked", "41", "(5s"]
    assert scopes.endswith("; NACKED 42 (2s ago): bad scope")
    [answer] = await cli.json("envoys")
    assert answer["types"][SCOPES]["nack_message"] == "bad\nscope"


async def test_errors_are_one_line_with_the_apis_message(
    cli: Cli, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    assert await cli.fails("drain", "0", token=None) == (
        "error: this operation needs 'Authorization: Bearer <token>' (401 unauthorized); "
        "pass --token or set STATEFUL_ROUTE_TOKEN"
    )
    assert "(401 unauthorized); pass --token" in await cli.fails(
        "drain", "0", token="wrong-token-0123456789"
    )
    assert await cli.fails("drain", "7") == (
        f"error: pod 7 is not registered in {NAMESPACE}/{SERVICE} (404 unknown_pod)"
    )
    await cli.ok("drain", "1")
    assert "(409 pod_not_eligible)" in await cli.fails("migrate", "alice", "1")
    assert "(404 unknown_service)" in await cli.fails("status", "-s", "nope")
    assert await cli.fails("drain", "0", "--move-users-per-s", "-1") == (
        "error: move_users_per_s: Input should be greater than 0 (422 validation_error)"
    )


async def test_an_unreachable_api_is_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["status"], ["users", "0"], ["user", "alice"], ["envoys", "--json"]):
        status = main([*command, "--admin", f"http://127.0.0.1:{free_port()}"])
        out, err = capsys.readouterr()
        assert (status, out) == (1, "")
        assert err.startswith("error: cannot reach the admin API at http://127.0.0.1:")
        assert err.endswith(": Connection refused\n")


async def test_register_once_registers_the_pod_with_a_lease_and_says_so(
    cli: Cli, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    line = await cli.ok("register", "--host", "10.5.0.1", "--port", "8080", "--once")
    assert line == "pod 2 (10.5.0.1:8080) is healthy; its lease lasts 30 s unless renewed\n"
    lease = await cli.json("register", "--host", "10.5.0.1", "--port", "8080", "--once")
    assert lease["pod_index"] == 2  # the same place: the same pod, renewed
    error = await cli.fails("register", "--host", "10.5.0.1", "--port", "8080", "--ttl", "0")
    assert "ttl_s" in error


async def test_the_register_sidecar_renews_until_stopped_then_ends_the_lease(
    cli: Cli, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=1)
    keys = manager.store.keys(KEY)
    command = [
        sys.executable, "-m", "controlplane.cli", "register", "--admin", cli.admin,
        "--token", TOKEN, "-n", NAMESPACE, "-s", SERVICE,
        "--host", "10.5.0.9", "--port", "8080", "--ttl", "1.5",
    ]  # fmt: skip
    sidecar = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        first = await eventually(
            lambda: manager.store.leases.ends_at(keys, 1), "the sidecar registered pod 1"
        )

        async def renewed() -> bool:
            ends_at = await manager.store.leases.ends_at(keys, 1)
            return ends_at is not None and ends_at > first

        await eventually(renewed, "the sidecar renewed the lease")
        sidecar.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(sidecar.communicate(), timeout=10)
    finally:
        if sidecar.returncode is None:
            sidecar.kill()
            await sidecar.wait()
    assert sidecar.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1] == "pod 1 left: its lease ended, it is drained"
    pod = {p.index: p for p in await manager.pods(KEY)}[1]
    assert pod.state is PodState.DRAINING
