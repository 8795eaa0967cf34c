"""Failover: kill -9 of a pod under load -> last failed request, and -> its users re-bound;
SIGSTOP of a pod past its hang grace -> late answers from it after its users moved.

A whole local stack (Redis, the control plane as a subprocess, 4 demo pods, Envoy over delta
ADS: the transport for thousands of users; ``--transport ads`` for state-of-the-world ADS,
whose scope pushes resend every user's scope).
Users are bound through Envoy; the users of one pod then send requests without pause while
that pod is killed. Measured from the kill: the last request that failed (Envoy's retries to
another pod should hide the death), the moment the control plane's binding table holds no user
on the dead pod, and the moment Envoy's scope of every moved user names another pod (its
scoped-routes config dump); and how many moved users were served by more than one pod after
the kill (a request Envoy's own balancer placed before the user's scope moved). Baseline in
the same run: the same stack with the control plane reading no Envoy signal (outlier-event
log, stats), so that only its active health checks (every 1 s, 3 failures) find the dead pod,
as a control plane without Envoy's signals would.

The hang: the users of one pod are asked at a steady rate (whether or not earlier requests
were answered) while that pod is stopped (SIGSTOP) until it fails, then resumed half a second
later: it answers whatever still waits on it. Counted: answers from the stopped pod that
reached a user after another pod had answered that user (late answers: the fence says none),
and users served by more than one new pod. The service's route timeout is 4 s and its hang
grace 5 s (checks every 0.5 s, timing out after 1 s), so the figures come quickly.

    python -m bench.failover [--users 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, get_args

import aiohttp

from bench._common import Figure, Scenario, until
from controlplane.runtime.stack import (
    NAMESPACE,
    SERVICE,
    UID_HEADER,
    LocalStack,
    StackConfig,
    Transport,
)

HANG_SETTINGS = {
    "failover": {"hang_grace_s": 5.0},
    "envoy": {"route_timeout_s": 4.0},
    "health_check": {"interval_s": 0.5, "timeout_s": 1.0, "healthy_threshold": 20},
}
HANG_RATE_PER_S = 15  # the stopped pod's accept backlog (128) holds what waits on it
RESUME_AFTER_FAILURE_S = 0.5
AFTER_MOVE_S = 2.0

TARGET_LAST_FAILURE_S = 1.0
TARGET_REBOUND_S = 2.0
PODS_PATH = f"/api/v1/services/{NAMESPACE}/{SERVICE}/pods"
AFTER_KILL_S = 4.0  # load keeps going this long after the kill
WORKERS = 8


async def measure(config: StackConfig, users: int) -> dict[str, float]:
    stack = await LocalStack(config).start()
    try:
        async with aiohttp.ClientSession() as session:
            return await _kill_one_pod(stack, session, users)
    finally:
        await stack.stop()


async def _kill_one_pod(
    stack: LocalStack, session: aiohttp.ClientSession, users: int
) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {stack.token}"}

    async def ask(uid: str) -> int | None:
        try:
            async with session.get(
                stack.proxy_url + "/",
                headers={UID_HEADER: uid},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as response:
                if response.status != 200:
                    return None
                pod: int = (await response.json())["pod"]
                return pod
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def pods() -> dict[int, dict[str, Any]]:
        async with session.get(stack.admin_url + PODS_PATH, headers=headers) as response:
            return {p["pod_index"]: p for p in await response.json()}

    uids = [f"fo-{i:05d}" for i in range(users)]
    limit = asyncio.Semaphore(64)

    async def first_request(uid: str) -> int | None:
        async with limit:
            return await ask(uid)

    answers = await asyncio.gather(*(first_request(u) for u in uids))
    if None in answers:
        raise RuntimeError(f"{answers.count(None)} of {users} users' first requests failed")
    placed = dict(zip(uids, answers, strict=True))

    async def routed() -> bool:
        # Every user has its own scope in Envoy, keyed "u" + uid (xds/scopes.py).
        assert stack.envoy is not None
        dump = await stack.envoy.get("/config_dump?resource=dynamic_scoped_route_configs")
        return all(f'"u{uid}"' in dump for uid in uids)

    await until(routed, timeout_s=60, every_s=0.5)
    failed = placed[uids[0]]
    victims = [uid for uid, pod in placed.items() if pod == failed]
    failures: list[float] = []
    served_after: dict[str, set[int]] = {}
    requests = 0
    stop_at = time.perf_counter() + 60  # bounded even if the kill below never happens

    async def load(worker: int) -> None:
        nonlocal requests
        i = worker
        while time.perf_counter() < stop_at and requests < 200_000:
            uid = victims[i % len(victims)]
            pod = await ask(uid)
            requests += 1
            if pod is None:
                failures.append(time.perf_counter())
            elif pod != failed:
                served_after.setdefault(uid, set()).add(pod)
            i += WORKERS

    workers = [asyncio.create_task(load(w)) for w in range(WORKERS)]
    await asyncio.sleep(0.5)  # under load before the kill
    killed_at = time.perf_counter()
    stack.pods[failed].kill()
    stop_at = killed_at + AFTER_KILL_S

    async def rebound() -> bool:
        return (await pods())[failed]["bound_users"] == 0

    dead_routes = f"stateful-route:{NAMESPACE}/{SERVICE}={failed}"

    async def repointed() -> bool:
        assert stack.envoy is not None
        dump = await stack.envoy.config_dump("dynamic_scoped_route_configs")
        scopes = {
            s["name"]: s["route_configuration_name"]
            for group in dump["configs"]
            for s in group["scoped_route_configs"]
        }
        return all(scopes.get(f"u{uid}", dead_routes) != dead_routes for uid in victims)

    rebound_s, repointed_s = await asyncio.gather(
        until(rebound, timeout_s=15, every_s=0.02), until(repointed, timeout_s=15, every_s=0.05)
    )
    await asyncio.gather(*workers)
    last_failure = max(failures, default=killed_at) - killed_at
    return {
        "last_failure_s": last_failure,
        "rebound_s": rebound_s,
        "repointed_s": repointed_s,
        "served_by_two": sum(len(pods) > 1 for pods in served_after.values()),
        "failed_requests": len(failures),
        "requests": requests,
        "moved_users": len(victims),
    }


async def measure_hang(users: int) -> dict[str, float]:
    stack = await LocalStack(
        StackConfig(pods=4, transport="delta", service_settings=HANG_SETTINGS)
    ).start()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            return await _stop_one_pod(stack, session, users)
    finally:
        await stack.stop()


async def _stop_one_pod(
    stack: LocalStack, session: aiohttp.ClientSession, users: int
) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {stack.token}"}
    # (uid, pod or None, when the answer arrived)
    answers: list[tuple[str, int | None, float]] = []

    async def ask(uid: str) -> None:
        try:
            async with session.get(
                stack.proxy_url + "/",
                headers={UID_HEADER: uid},
                timeout=aiohttp.ClientTimeout(total=15),
            ) as response:
                pod = (await response.json())["pod"] if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            pod = None
        answers.append((uid, pod, time.perf_counter()))

    async def pods() -> dict[int, dict[str, Any]]:
        async with session.get(stack.admin_url + PODS_PATH, headers=headers) as response:
            return {p["pod_index"]: p for p in await response.json()}

    uids = [f"hang-{i:05d}" for i in range(users)]
    limit = asyncio.Semaphore(64)

    async def first_request(uid: str) -> None:
        async with limit:
            await ask(uid)

    await asyncio.gather(*(first_request(u) for u in uids))
    placed = {uid: pod for uid, pod, _ in answers}
    if None in placed.values():
        raise RuntimeError(f"{list(placed.values()).count(None)} first requests failed")
    answers.clear()
    stopped = placed[uids[0]]
    victims = [uid for uid, pod in placed.items() if pod == stopped]
    done = asyncio.Event()

    async def load() -> None:
        asked: set[asyncio.Task[None]] = set()
        for i in range(int(120 * HANG_RATE_PER_S)):  # bounded: two minutes at most
            if done.is_set():
                break
            task = asyncio.create_task(ask(victims[i % len(victims)]))
            asked.add(task)
            task.add_done_callback(asked.discard)
            await asyncio.sleep(1 / HANG_RATE_PER_S)
        await asyncio.gather(*asked)

    loading = asyncio.create_task(load())
    await asyncio.sleep(1.0)  # under load before the stop
    process = stack.pods[stopped]
    process.pause()
    paused_at = time.perf_counter()
    try:

        async def failed() -> bool:
            return (await pods())[stopped]["state"] in ("down", "ejected")

        failed_s = await until(failed, timeout_s=60, every_s=0.05)
        await asyncio.sleep(RESUME_AFTER_FAILURE_S)
    finally:
        process.resume()

    async def rebound() -> bool:
        return (await pods())[stopped]["bound_users"] == 0

    await until(rebound, timeout_s=60, every_s=0.05)
    moved_s = time.perf_counter() - paused_at
    await asyncio.sleep(AFTER_MOVE_S)
    done.set()
    await loading
    first_elsewhere: dict[str, float] = {}
    served: dict[str, set[int]] = {}
    for uid, pod, at in sorted(answers, key=lambda a: a[2]):
        if pod is not None and pod != stopped:
            first_elsewhere.setdefault(uid, at)
            served.setdefault(uid, set()).add(pod)
    late = sum(
        1
        for uid, pod, at in answers
        if pod == stopped and at > first_elsewhere.get(uid, float("inf"))
    )
    return {
        "late_answers": late,
        "served_by_two": sum(len(p) > 1 for p in served.values()),
        "failed_s": failed_s,
        "moved_s": moved_s,
        "errors": sum(pod is None for _, pod, _ in answers),
        "requests": len(answers),
        "moved_users": len(victims),
    }


async def run(users: int, transport: Transport = "delta") -> Scenario:
    scenario = Scenario(
        "failover",
        "Failover: kill -9 of a pod under load",
        f"python -m bench.failover --users {users} --transport {transport}",
        params={
            "users": users,
            "transport": transport,
            "pods": 4,
            "load_workers": WORKERS,
            "after_kill_s": AFTER_KILL_S,
            "hang": HANG_SETTINGS,
            "hang_rate_per_s": HANG_RATE_PER_S,
        },
    )
    ours = await measure(StackConfig(pods=4, transport=transport), users)
    # No Envoy signal read: only the control plane's own health checks find the dead pod.
    blind = {
        "signals": {
            "outlier_event_log": None,
            "poll_discovered_envoys": False,
            "load_reports": False,
        }
    }
    baseline = await measure(StackConfig(pods=4, transport=transport, extra_settings=blind), users)
    what = "active health checks only (1 s x 3)"
    scenario.add(
        Figure(
            "kill -> last failed request",
            ours["last_failure_s"],
            "s",
            what,
            baseline["last_failure_s"],
            higher_is_better=False,
            target=TARGET_LAST_FAILURE_S,
            note=f"{ours['failed_requests']:.0f} of {ours['requests']:.0f} requests failed "
            f"(baseline {baseline['failed_requests']:.0f} of {baseline['requests']:.0f})",
        )
    )
    scenario.add(
        Figure(
            "kill -> bindings re-written",
            ours["rebound_s"],
            "s",
            what,
            baseline["rebound_s"],
            higher_is_better=False,
            target=TARGET_REBOUND_S,
            note=f"{ours['moved_users']:.0f} users moved",
        )
    )
    scenario.add(
        Figure(
            "kill -> every moved user's scope names another pod in Envoy",
            ours["repointed_s"],
            "s",
            what,
            baseline["repointed_s"],
            higher_is_better=False,
        )
    )
    scenario.add(
        Figure(
            "moved users served by more than one pod after the kill",
            ours["served_by_two"],
            "users",
            what,
            baseline["served_by_two"],
            higher_is_better=False,
            target=0,
            note="a route naming the dead pod fails (503) rather than reach a pod Envoy picks",
        )
    )
    scenario.add(
        Figure(
            "requests failed after the kill",
            ours["failed_requests"],
            "requests",
            what,
            baseline["failed_requests"],
            higher_is_better=False,
            note=f"of {ours['requests']:.0f} (baseline of {baseline['requests']:.0f})",
        )
    )
    hang = await measure_hang(users)
    scenario.add(
        Figure(
            "hang: answers from the stopped pod after its user moved (late answers)",
            hang["late_answers"],
            "answers",
            target=0,
            higher_is_better=False,
            note=f"{hang['requests']:.0f} requests, {hang['errors']:.0f} failed, "
            f"{hang['moved_users']:.0f} users moved",
        )
    )
    scenario.add(
        Figure(
            "hang: moved users served by more than one new pod",
            hang["served_by_two"],
            "users",
            target=0,
            higher_is_better=False,
        )
    )
    scenario.add(
        Figure(
            "hang: SIGSTOP -> pod failed (hang grace 5 s)",
            hang["failed_s"],
            "s",
            higher_is_better=False,
        )
    )
    scenario.add(
        Figure(
            "hang: SIGSTOP -> its users re-bound (grace + fence: route timeout 4 s + 1 s)",
            hang["moved_s"],
            "s",
            higher_is_better=False,
        )
    )
    return scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--transport", choices=get_args(Transport), default="delta")
    args = parser.parse_args()
    asyncio.run(run(args.users, args.transport))


if __name__ == "__main__":
    main()
