"""Users' requests through a real Envoy land on their pod, before and after faults.

The demo pods count each user's requests: a user moved to another pod starts again at 1.
"""

from __future__ import annotations

import asyncio

import pytest

from controlplane.domain.placement import SETTLE_S
from controlplane.runtime.stack import NAMESPACE, SERVICE, LocalStack
from controlplane.xds.naming import SCOPE_KEY_HEADER, SERVICE_HEADER
from controlplane.xds.scopes import user_key

from .conftest import SERVICE_PATH, Client, served_in_the_end

pytestmark = [pytest.mark.envoy, pytest.mark.asyncio(loop_scope="module")]


async def bind(client: Client, uids: list[str]) -> dict[str, int]:
    answers = await asyncio.gather(*(client.ask(uid) for uid in uids))
    return {a["uid"]: a["pod"] for a in answers}


async def test_every_user_stays_on_one_pod_for_all_its_requests(client: Client) -> None:
    async def user(uid: str) -> list[tuple[int, int]]:
        return [((a := await client.ask(uid))["pod"], a["count"]) for _ in range(20)]

    sem = asyncio.Semaphore(50)

    async def limited(uid: str) -> list[tuple[int, int]]:
        async with sem:
            return await user(uid)

    uids = [f"steady-{i}" for i in range(500)]
    runs = await asyncio.gather(*(limited(uid) for uid in uids))
    for uid, run in zip(uids, runs, strict=True):
        assert len({pod for pod, _ in run}) == 1, f"{uid} moved: {run}"
        assert [count for _, count in run] == list(range(1, 21)), f"{uid}: {run}"
        assert run[0][0] == await client.pod_of(uid)
    assert len({run[0][0] for run in runs}) == 4  # spread over every pod


async def test_a_client_cannot_choose_its_pod(client: Client, stack: LocalStack) -> None:
    uids = ["spoofer", *(f"victim-{i}" for i in range(20))]
    bound = await bind(client, uids)
    victim = next(uid for uid in uids if bound[uid] != bound["spoofer"])
    # Another user's scope key, and the service header the miss path reads.
    forged = {
        SCOPE_KEY_HEADER: user_key(("x-uid",), "x-uid", victim),
        SERVICE_HEADER: "demo/elsewhere",
    }
    for _ in range(3):
        assert (await client.ask("spoofer", **forged))["pod"] == bound["spoofer"]
    newcomer = await client.ask("forger", **forged)
    assert newcomer["pod"] == await client.pod_of("forger")


async def test_a_migrated_user_lands_on_its_new_pod_within_one_push(client: Client) -> None:
    before = (await bind(client, ["mover"]))["mover"]
    target = (before + 1) % 4
    await client.admin("PUT", f"{SERVICE_PATH}/users/mover", {"pod": target})

    async def landed() -> bool:
        return (await client.ask("mover"))["pod"] == target

    await client.until(landed, timeout_s=2)


async def test_a_drained_pod_takes_no_new_user_but_keeps_its_own(client: Client) -> None:
    placed = await bind(client, [f"before-drain-{i}" for i in range(40)])
    drained = placed["before-drain-0"]
    await client.admin("POST", f"{SERVICE_PATH}/pods/{drained}/drain", {})
    try:
        assert (await client.pods())[drained]["state"] == "draining"
        newcomers = await bind(client, [f"after-drain-{i}" for i in range(100)])
        assert drained not in newcomers.values()
        stayers = [uid for uid, pod in placed.items() if pod == drained]
        again = await bind(client, stayers)
        assert set(again.values()) == {drained}
    finally:
        await client.admin("POST", f"{SERVICE_PATH}/pods/{drained}/recover", {})


async def test_users_stay_on_their_pods_across_a_control_plane_restart(
    client: Client, stack: LocalStack
) -> None:
    placed = await bind(client, [f"cp-restart-{i}" for i in range(50)])
    await client.until(lambda: client.routed_by_envoy(list(placed)))
    assert stack.controlplane is not None
    stack.controlplane.kill()
    # Envoy keeps its routes: bound users are served while the control plane is down.
    during = await bind(client, list(placed))
    await stack.start_controlplane()
    await client.until(client.envoy_in_sync, timeout_s=10)
    after = await bind(client, list(placed))
    assert during == placed
    assert after == placed


async def test_users_stay_on_their_pods_across_an_envoy_restart(
    client: Client, stack: LocalStack
) -> None:
    placed = await bind(client, [f"envoy-restart-{i}" for i in range(50)])
    await client.until(lambda: client.routed_by_envoy(list(placed)))
    await stack.restart_envoy()
    await stack.wait_until_routing()
    assert await bind(client, list(placed)) == placed


async def test_users_of_a_killed_pod_are_served_elsewhere_and_rebound(
    client: Client, stack: LocalStack
) -> None:
    placed = await bind(client, [f"victim-{i}" for i in range(200)])
    failed = placed["victim-0"]
    on_failed = (await client.pods())[failed]["bound_users"]
    victims = [uid for uid, pod in placed.items() if pod == failed]
    # Users Envoy routes by their own scopes (pushed paced): a user without one yet would be
    # placed again by its next request's miss path, not counted among the failure's moves.
    await client.until(lambda: client.routed_by_envoy(victims))
    history = await client.admin("GET", f"{SERVICE_PATH}/failovers")
    stack.pods[failed].kill()
    try:
        # A request caught between the failure and its user's re-pointed scope fails (503):
        # it never lands on a pod other than the one the user is then bound to.
        answers = await asyncio.gather(*(served_in_the_end(client, uid) for uid in victims))
        assert failed not in answers

        async def rebound() -> bool:
            return (await client.pods())[failed]["bound_users"] == 0

        await client.until(rebound, timeout_s=2)
        bound = [await client.pod_of(uid) for uid in victims]
        assert bound == answers  # served only by the pod each is bound to: no double move
        events = await client.admin("GET", f"{SERVICE_PATH}/failovers")
        new = events[: len(events) - len(history)]
        failures = [e for e in new if e["type"] == "POD_FAILURE"]
        assert len(failures) == 1
        assert failures[0]["pod"] == failed
        assert failures[0]["affected_users"] == on_failed
    finally:
        await stack.restart_pod(failed)
        await until_healthy(client, failed)


async def ejected_by_envoy(stack: LocalStack) -> set[int]:
    """The pods Envoy's outlier detection holds ejected now."""
    assert stack.envoy is not None
    clusters = (await stack.envoy.clusters())["cluster_statuses"]
    [service] = [c for c in clusters if c["name"] == f"{NAMESPACE}/{SERVICE}"]
    ports = {port: pod for pod, port in enumerate(stack.pod_ports)}
    return {
        ports[host["address"]["socket_address"]["port_value"]]
        for host in service["host_statuses"]
        if host["health_status"].get("failed_outlier_check")
    }


async def serves_endpoint(stack: LocalStack, pod: int) -> bool:
    """Whether Envoy holds ``pod``'s endpoint healthy (in EDS, not ejected)."""
    assert stack.envoy is not None
    clusters = (await stack.envoy.clusters())["cluster_statuses"]
    [service] = [c for c in clusters if c["name"] == f"{NAMESPACE}/{SERVICE}"]
    port = stack.pod_ports[pod]
    return any(
        host["address"]["socket_address"]["port_value"] == port
        and host["health_status"].get("eds_health_status") == "HEALTHY"
        and not host["health_status"].get("failed_outlier_check")
        for host in service["host_statuses"]
    )


async def kill_until_rebound(client: Client, stack: LocalStack, prefix: str) -> tuple[int, float]:
    """Kill a pod Envoy holds healthy while its users keep asking: the pod, and the seconds
    until no user is bound to it."""
    pod = min(set(range(len(stack.pods))) - await ejected_by_envoy(stack))
    victims = [f"{prefix}-{i}" for i in range(20)]
    for uid in victims:  # placed there whatever its load
        await client.admin("PUT", f"{SERVICE_PATH}/users/{uid}", {"pod": pod})
    await client.until(lambda: client.routed_by_envoy(victims))
    stack.pods[pod].kill()
    answers = await asyncio.gather(*(served_in_the_end(client, uid) for uid in victims))
    assert pod not in answers

    async def rebound() -> bool:
        return (await client.pods())[pod]["bound_users"] == 0

    return pod, await client.until(rebound, timeout_s=5)


async def until_healthy(client: Client, pod: int) -> None:
    async def healthy() -> bool:
        return (await client.pods())[pod]["state"] == "healthy"

    # Envoy holds a killed pod ejected for base_ejection_time_s (10 s here) before the
    # control plane may take it back.
    await client.until(healthy, timeout_s=25)


async def test_pods_dying_one_after_another_are_each_failed_over_at_once(
    client: Client, stack: LocalStack
) -> None:
    # Envoy writes its event logs out every 10 s unless told otherwise: only its first
    # ejection would reach the control plane at once.
    killed = []
    try:
        for prefix in ("first-death", "second-death"):
            pod, took = await kill_until_rebound(client, stack, prefix)
            killed.append(pod)
            await stack.restart_pod(pod)
            assert took <= 2.0
    finally:
        await asyncio.gather(*(until_healthy(client, pod) for pod in killed))


async def test_a_restarted_pod_takes_users_again_once_envoy_takes_it_back(
    client: Client, stack: LocalStack
) -> None:
    pod, _ = await kill_until_rebound(client, stack, "before-comeback")
    await stack.restart_pod(pod)

    async def recovering() -> bool:  # the control plane's own checks pass
        return (await client.pods())[pod]["state"] == "recovering"

    await client.until(recovering, timeout_s=10)
    assert pod in await ejected_by_envoy(stack)
    await until_healthy(client, pod)
    assert pod not in await ejected_by_envoy(stack)

    async def user(uid: str) -> list[tuple[int, int]]:
        return [((a := await client.ask(uid))["pod"], a["count"]) for _ in range(3)]

    async def newcomers(prefix: str) -> list[int]:
        uids = [f"{prefix}-{i}" for i in range(40)]
        runs = await asyncio.gather(*(user(uid) for uid in uids))
        for uid, run in zip(uids, runs, strict=True):
            assert run == [(run[0][0], 1), (run[0][0], 2), (run[0][0], 3)], f"{uid}: {run}"
        return [run[0][0] for run in runs]

    # Right away (before Envoy may have the pod's endpoint back), and once it has and the
    # settle that waits for it is over: a rule of time, counted from before the pod was seen
    # healthy, so this sleep is a bound, not a guess.
    assert pod not in await newcomers("at-comeback")
    await client.until(lambda: serves_endpoint(stack, pod), timeout_s=10)
    await asyncio.sleep(SETTLE_S)
    assert pod in await newcomers("after-comeback")  # the emptied pod takes newcomers first
