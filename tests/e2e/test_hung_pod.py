"""A hung pod (SIGSTOP) through a real Envoy: a pause is not a death, and after a move the old
pod answers nobody it lost (the fence, docs/architecture.md).

The service's route timeout is 4 s and its hang grace 5 s; the checks time out after 1 s,
every 0.5 s, two in a row fail a pod that refuses connections, and a failed pod needs 20
passes to be healthy again (a pod that resumes within its fence keeps its users only if it is
healthy by then). Every SIGSTOP is undone in a
``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio

from controlplane.runtime.stack import UID_HEADER, LocalStack, StackConfig

from .conftest import Client

pytestmark = [pytest.mark.envoy, pytest.mark.asyncio(loop_scope="module")]

ROUTE_TIMEOUT_S = 4.0
HANG_GRACE_S = 5.0
PAUSE_S = 3.0  # shorter than both; longer than two timed-out checks
SERVICE_SETTINGS = {
    "failover": {"hang_grace_s": HANG_GRACE_S},
    "envoy": {"route_timeout_s": ROUTE_TIMEOUT_S},
    "health_check": {
        "interval_s": 0.5,
        "timeout_s": 1.0,
        "unhealthy_threshold": 2,
        "healthy_threshold": 20,
    },
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client() -> AsyncIterator[Client]:
    stack = await LocalStack(StackConfig(pods=3, service_settings=SERVICE_SETTINGS)).start()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            yield Client(stack, session)
    finally:
        await stack.stop()


@dataclass
class Answer:
    uid: str
    pod: int | None  # None: an error
    count: int
    done: float  # monotonic time the answer reached the client
    took: float


@dataclass
class Load:
    """The users asked in turn, one request every ``every_s`` whether or not earlier ones
    were answered (so requests keep coming while some wait on a stopped pod); every answer
    kept."""

    client: Client
    uids: list[str]
    answers: list[Answer] = field(default_factory=list)

    async def run(self, stop: asyncio.Event, every_s: float = 0.025) -> None:
        # 40 a second: a 3 s stop leaves 120 requests waiting, within the pod's accept backlog
        # (128): more would find no connection, a failure a stop causes, not the fence.
        async def ask(uid: str) -> None:
            started = time.monotonic()
            try:
                async with self.client.session.get(
                    self.client.stack.proxy_url + "/",
                    headers={UID_HEADER: uid},
                    timeout=aiohttp.ClientTimeout(total=15),
                ) as response:
                    body = await response.json() if response.status == 200 else None
            except (aiohttp.ClientError, TimeoutError):
                body = None
            now = time.monotonic()
            pod, count = (body["pod"], body["count"]) if body else (None, 0)
            self.answers.append(Answer(uid, pod, count, now, now - started))

        asked: set[asyncio.Task[None]] = set()
        for i in range(20_000):
            if stop.is_set():
                break
            task = asyncio.create_task(ask(self.uids[i % len(self.uids)]))
            asked.add(task)
            task.add_done_callback(asked.discard)
            await asyncio.sleep(every_s)
        await asyncio.gather(*asked)

    def errors(self) -> list[Answer]:
        return [a for a in self.answers if a.pod is None]

    def late_answers(self, old: int) -> list[Answer]:
        """Answers from pod ``old`` that reached a user after another pod had answered it."""
        moved_at: dict[str, float] = {}
        for answer in sorted(self.answers, key=lambda a: a.done):
            if answer.pod is not None and answer.pod != old:
                moved_at.setdefault(answer.uid, answer.done)
        return [
            a for a in self.answers if a.pod == old and a.done > moved_at.get(a.uid, float("inf"))
        ]

    def served_by(self, uid: str) -> list[int]:
        """The pods that answered ``uid``, in the order they first did."""
        pods: list[int] = []
        for answer in sorted(self.answers, key=lambda a: a.done):
            if answer.pod is not None and answer.pod not in pods and answer.uid == uid:
                pods.append(answer.pod)
        return pods


async def users_of_one_pod(client: Client, prefix: str, count: int = 60) -> tuple[int, list[str]]:
    answers = await asyncio.gather(*(client.ask(f"{prefix}-{i}") for i in range(count)))
    placed = {a["uid"]: a["pod"] for a in answers}
    await client.until(lambda: client.routed_by_envoy(list(placed)), timeout_s=10)
    pod = answers[0]["pod"]
    return pod, [uid for uid, p in placed.items() if p == pod]


async def bound_pods(client: Client, uids: list[str]) -> set[int]:
    return {await client.pod_of(uid) for uid in uids}


async def test_a_pod_stopped_for_less_than_the_grace_keeps_its_users_with_no_error(
    client: Client,
) -> None:
    await client.stack.wait_until_pods_healthy()
    async with paused_under_load(client, "pause") as hung:
        pod, victims, load, paused = hung.pod, hung.victims, hung.load, hung.paused
        # Stopped past the unhealthy threshold, less than the grace and the route timeout.
        await client.until(lambda: _state_is(client, pod, "suspect"), timeout_s=5, every_s=0.05)
        await asyncio.sleep(max(0.0, paused + PAUSE_S - time.monotonic()))
    stopped_for = time.monotonic() - paused
    await client.until(lambda: _state_is(client, pod, "healthy"), timeout_s=10)
    await client.until(more_answers(load, 20))
    await hung.stop_load()
    slowest = max(a.took for a in load.answers)
    print(f"\npause {stopped_for:.2f}s: {len(load.answers)} answers, slowest {slowest:.2f}s")
    assert load.errors() == []
    assert {a.pod for a in load.answers} == {pod}
    assert await bound_pods(client, victims) == {pod}
    assert slowest >= PAUSE_S - 1.0  # the pause showed as latency, and only as latency


async def test_a_pod_hung_past_the_grace_loses_its_users_once_and_answers_none_of_them_late(
    client: Client,
) -> None:
    await client.stack.wait_until_pods_healthy(timeout_s=30)
    async with paused_under_load(client, "hang") as hung:
        pod, victims, load, paused = hung.pod, hung.victims, hung.load, hung.paused
        await client.until(lambda: _failed(client, pod), timeout_s=20, every_s=0.05)
        failed_after = time.monotonic() - paused
        # Resumed soon after its failure: it answers whatever still waits on it. Without the
        # fence its users have moved by now and those answers reach them late.
        await asyncio.sleep(0.5)
    await client.until(lambda: _all_moved(client, victims, pod), timeout_s=20)
    moved_after = time.monotonic() - paused
    await client.until(more_answers(load, 3 * len(victims)), timeout_s=20)
    await hung.stop_load()
    late = load.late_answers(pod)
    print(
        f"\nhang: failed {failed_after:.2f}s and users moved {moved_after:.2f}s after the stop; "
        f"{len(load.answers)} answers, {len(load.errors())} errors, {len(late)} late"
    )
    assert late == []
    assert failed_after >= HANG_GRACE_S
    assert moved_after >= failed_after + ROUTE_TIMEOUT_S
    for uid in victims:
        new_pods = [p for p in load.served_by(uid) if p != pod]
        assert len(new_pods) <= 1, (uid, new_pods)  # moved once at most


@dataclass
class Paused:
    """One pod's users asking without pause while that pod is stopped (SIGSTOP)."""

    pod: int
    victims: list[str]
    load: Load
    paused: float  # time.monotonic() of the stop
    _stop: asyncio.Event
    _running: asyncio.Task[None]

    async def stop_load(self) -> None:
        self._stop.set()
        await self._running


@contextlib.asynccontextmanager
async def paused_under_load(client: Client, prefix: str) -> AsyncIterator[Paused]:
    """Bind users of one pod, keep them asking, stop their pod once they are answered; the
    pod runs again on leaving (the load goes on until ``stop_load``)."""
    pod, victims = await users_of_one_pod(client, prefix)
    load = Load(client, victims)
    stop = asyncio.Event()
    running = asyncio.create_task(load.run(stop))
    process = client.stack.pods[pod]
    try:
        await client.until(more_answers(load, 20))
        process.pause()
        yield Paused(pod, victims, load, time.monotonic(), stop, running)
    finally:
        process.resume()


def more_answers(load: Load, count: int) -> Callable[[], Awaitable[bool]]:
    """A check: ``load`` has ``count`` more answers than when this was called."""
    target = len(load.answers) + count

    async def check() -> bool:
        return len(load.answers) >= target

    return check


async def _state_is(client: Client, pod: int, state: str) -> bool:
    return bool((await client.pods())[pod]["state"] == state)


async def _failed(client: Client, pod: int) -> bool:
    return (await client.pods())[pod]["state"] in ("down", "ejected")


async def _all_moved(client: Client, uids: list[str], old: int) -> bool:
    return old not in await bound_pods(client, uids)
