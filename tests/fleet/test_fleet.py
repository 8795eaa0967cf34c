"""A fleet on separate hosts (network namespaces), all through its Envoys with real HTTP.

Three gateways: gw1 and gw2 each an Envoy with a control-plane replica beside it, gw3 an
Envoy whose control plane is on another host and which writes no event log; four demo pods
on hosts of their own, registered by name; Redis on its own. The demo pods count each user's
requests: a user moved to another pod starts again at 1.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.fleet.traffic import Load, place, routed_by_every_envoy, serving_in
from tests.support.fleet import Fleet
from tests.support.fleet.configs import SERVICE_PATH
from tests.support.waiting import eventually

pytestmark = [pytest.mark.fleet, pytest.mark.envoy, pytest.mark.asyncio(loop_scope="module")]

GATEWAYS = ["gw1", "gw2", "gw3"]


async def test_a_users_requests_through_any_envoy_land_on_the_same_pod(fleet: Fleet) -> None:
    uids = [f"roamer-{i}" for i in range(40)]
    runs: dict[str, list[tuple[int, int]]] = {uid: [] for uid in uids}
    for _ in range(3):
        for gateway in GATEWAYS:
            for answer in await asyncio.gather(*(fleet.ask(gateway, uid) for uid in uids)):
                runs[answer["uid"]].append((answer["pod"], answer["count"]))
    for uid, run in runs.items():
        assert len({pod for pod, _ in run}) == 1, f"{uid} moved: {run}"
        assert [count for _, count in run] == list(range(1, 10)), f"{uid}: {run}"
        binding = await fleet.any_admin("GET", f"{SERVICE_PATH}/users/{uid}")
        assert binding["pod"] == run[0][0]
    assert len({run[0][0] for run in runs.values()}) > 1  # spread over the pods


async def test_a_killed_pod_is_left_by_every_envoy_and_its_users_move_once(fleet: Fleet) -> None:
    placed = await place(fleet, [f"victim-{i}" for i in range(60)])
    failed = placed["victim-0"]
    victims = [uid for uid, pod in placed.items() if pod == failed]
    on_failed = (await fleet.pods_state())[failed]["bound_users"]
    await eventually(lambda: routed_by_every_envoy(fleet, victims), "victims' scopes everywhere")
    history = await fleet.any_admin("GET", f"{SERVICE_PATH}/failovers")

    fleet.pods[failed].process.kill()
    killed = time.monotonic()
    stopped: dict[str, float] = {}
    rebound: float | None = None
    # The victims keep asking through every gateway (bounded: 20 s) until every Envoy has
    # stopped sending to the pod and no user is bound to it any more.
    while len(stopped) < len(GATEWAYS) or rebound is None:
        assert time.monotonic() - killed < 20, f"stopped {stopped}, rebound {rebound}"
        for gateway in GATEWAYS:
            await asyncio.gather(*(fleet.ask(gateway, uid) for uid in victims))
            if gateway not in stopped and not await serving_in(fleet, gateway, failed):
                stopped[gateway] = time.monotonic() - killed
        if rebound is None and (await fleet.pods_state())[failed]["bound_users"] == 0:
            rebound = time.monotonic() - killed
    print(
        f"\npod kill -9: Envoys stopped sending to it after "
        f"{', '.join(f'{g} {t:.2f}s' for g, t in sorted(stopped.items()))}; "
        f"its {len(victims)} users re-bound after {rebound:.2f}s"
    )

    async def moved_to() -> dict[str, int]:
        bindings = [await fleet.any_admin("GET", f"{SERVICE_PATH}/users/{u}") for u in victims]
        return {uid: b["pod"] for uid, b in zip(victims, bindings, strict=True)}

    moved = await moved_to()
    assert failed not in moved.values()

    async def every_envoy_routes_them_there() -> bool:
        for gateway in GATEWAYS:
            answers = await asyncio.gather(*(fleet.ask(gateway, uid) for uid in victims))
            if {a["uid"]: a.get("pod") for a in answers} != moved:
                return False
        return True

    await eventually(every_envoy_routes_them_there, "every Envoy routes the moved users")
    assert await moved_to() == moved  # moved once: still where the failure put them
    events = await fleet.any_admin("GET", f"{SERVICE_PATH}/failovers")
    failures = [e for e in events[: len(events) - len(history)] if e["type"] == "POD_FAILURE"]
    assert [(e["pod"], e["affected_users"]) for e in failures] == [(failed, on_failed)]


async def test_a_pod_restarted_at_a_new_address_keeps_its_index_and_users(fleet: Fleet) -> None:
    placed = await place(fleet, [f"rescheduled-{i}" for i in range(40)])
    index = placed["rescheduled-0"]
    its_users = [uid for uid, pod in placed.items() if pod == index]
    await eventually(lambda: routed_by_every_envoy(fleet, its_users), "its users' scopes")
    history = await fleet.any_admin("GET", f"{SERVICE_PATH}/failovers")
    old = fleet.pods[index]

    new = await fleet.reschedule_pod(index)  # a new process, a new address, the same name
    assert new.host.address != old.host.address
    renamed = time.monotonic()

    async def every_envoy_sends_there() -> bool:
        pod = (await fleet.pods_state())[index]
        if not pod["address"].startswith(f"{new.host.address}:"):
            return False
        return all([await serving_in(fleet, gateway, index) for gateway in GATEWAYS])

    await eventually(every_envoy_sends_there, "every Envoy has its new address", 10)
    took = time.monotonic() - renamed
    print(f"\npod {index} at a new address: every Envoy sends there {took:.2f}s on")
    await fleet.stop_pod(old)  # the old process goes: nothing of the pod depends on it

    for gateway in GATEWAYS:
        answers = await asyncio.gather(*(fleet.ask(gateway, uid) for uid in its_users))
        assert {a.get("pod") for a in answers} == {index}, answers
    for uid in its_users:  # bound to the index, not the address: nobody moved
        assert (await fleet.any_admin("GET", f"{SERVICE_PATH}/users/{uid}"))["pod"] == index
    events = await fleet.any_admin("GET", f"{SERVICE_PATH}/failovers")
    assert events[: len(events) - len(history)] == []


async def test_a_pod_failure_only_the_third_envoy_sees_reaches_the_control_plane(
    fleet: Fleet,
) -> None:
    """gw3 writes no log any replica reads: its load reports, or its admin API that a replica
    polls (found from its node metadata), carry what it sees."""
    placed = await place(fleet, [f"remote-victim-{i}" for i in range(40)])
    failed = placed["remote-victim-0"]
    victims = [uid for uid, pod in placed.items() if pod == failed]
    await eventually(lambda: routed_by_every_envoy(fleet, victims), "victims' scopes everywhere")
    fleet.pods[failed].process.kill()
    killed = time.monotonic()

    async def failed_and_left() -> bool:
        await asyncio.gather(*(fleet.ask("gw3", uid) for uid in victims))
        pod = (await fleet.pods_state())[failed]
        return pod["state"] not in ("healthy", "suspect") and pod["bound_users"] == 0

    await eventually(failed_and_left, "the pod failed and its users moved", within_s=15)
    took = time.monotonic() - killed
    reason = (await fleet.pods_state())[failed]["reason"]
    print(f"\npod kill -9 seen by gw3 alone: failed and users moved {took:.2f}s on ({reason})")
    # Over the network (whichever came first), not from an event log: the log tail's reasons
    # read "envoy outlier detection: ..." or "envoy health check: ...".
    assert reason.startswith(("envoy load reports", "envoy failed_outlier_check")), reason
    for gateway in GATEWAYS:
        assert not await serving_in(fleet, gateway, failed), gateway


async def kill_replica_under_load(fleet: Fleet, victim: str, prefix: str) -> Load:
    """Kill -9 replica ``victim`` while bound users ask through every gateway; the load once
    the survivor leads and holds every Envoy's stream, and more rounds went through."""
    [survivor] = [name for name in fleet.replicas if name != victim]
    placed = await place(fleet, [f"{prefix}-{i}" for i in range(30)])
    await eventually(lambda: routed_by_every_envoy(fleet, list(placed)), "scopes everywhere")
    load = Load(fleet, placed, list(GATEWAYS)).start()
    try:
        await load.until_rounds(2)
        fleet.replicas[victim].process.kill()
        killed = time.monotonic()

        async def survivor_leads_every_envoy() -> bool:
            return await fleet.leader() == survivor and await fleet.attached(survivor) == set(
                GATEWAYS
            )

        await eventually(survivor_leads_every_envoy, f"{survivor} leads every Envoy", 15)
        print(
            f"\n{victim} kill -9: {survivor} leads every Envoy {time.monotonic() - killed:.2f}s on"
        )
        await load.until_rounds(3)
    finally:
        await load.stop()
    await fleet.start_replica(victim)
    return load


async def test_a_killed_replica_with_envoys_attached_costs_no_bound_user(fleet: Fleet) -> None:
    leader = await eventually(fleet.leader, "a leader")
    assert leader is not None
    [follower] = [name for name in fleet.replicas if name != leader]
    assert await fleet.attached(follower), "its own gateway's Envoy at least"
    load = await kill_replica_under_load(fleet, follower, "follower-kill")
    assert load.requests > 0
    assert not load.failures, load.failures


async def test_a_killed_leader_costs_no_bound_user(fleet: Fleet) -> None:
    leader = await eventually(fleet.leader, "a leader")
    assert leader is not None
    load = await kill_replica_under_load(fleet, leader, "leader-kill")
    assert load.requests > 0
    assert not load.failures, load.failures


async def test_an_envoy_host_added_and_one_removed_while_traffic_flows(fleet: Fleet) -> None:
    placed = await place(fleet, [f"traveller-{i}" for i in range(30)])
    await eventually(lambda: routed_by_every_envoy(fleet, list(placed)), "scopes everywhere")
    load = Load(fleet, placed, list(GATEWAYS)).start()
    try:
        await load.until_rounds(1)
        await fleet.add_gateway("gw4", ("gw2", "gw1"))
        assert await place(fleet, list(placed), "gw4") == placed  # counts go on: same pods
        load.gateways.append("gw4")
        await load.until_rounds(2)
        load.gateways.remove("gw3")  # its clients leave it first, as a load balancer's would
        await load.until_rounds(1)
        await fleet.remove_gateway("gw3")
        await load.until_rounds(2)
    finally:
        await load.stop()
    assert not load.failures, load.failures

    async def envoys_listed() -> bool:
        listed = set().union(*[await fleet.attached(name) for name in fleet.replicas])
        return listed == {"gw1", "gw2", "gw4"}

    await eventually(envoys_listed, "gw4 in the control plane's lists, gw3 out")
