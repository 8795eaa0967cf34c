"""Churn: new users arriving while N bound users run through Envoy, vs plain Envoy round robin.

Ours: Envoy (delta ADS from the real xDS server, ``envoy/delta.yaml``, one worker) holding N
bound users, each its own scope (scoped RDS) naming its pod's shared RouteConfiguration. New
users arrive at R per second: the bench's event loop calls ``MemoryStateSource.route(key,
{uid: pod})`` for each, which is what the miss path does for a new user; the sticky table tells
the xDS cache, which re-points that one scope; the xDS server pushes the scopes changed meanwhile
together, paced (``xds.scope_push_*``: 42 ms apart at 100,000 users). The pods are one C++ Envoy
answering ``{"pod": i}`` per port (``pods_bootstrap``); wrk drives the bound users.

For each N (one fresh xDS server and Envoy each):

- initial load: the N users put in chunks, each chunk until its last user lands on its pod
  through Envoy; Envoy's heap (admin ``/memory``: allocated) and RSS before and after;
- throughput, shared core (data_path's method): ours and plain Envoy round robin (the
  baseline) loaded at the same moment on the same core, static (no arrivals), then with
  R/s arriving for the whole of the wrk rounds (>= 30 s in the full run);
- arrival -> the user's scope live: for a sample of arrivals (~20/s), a request with that uid
  is sent through Envoy every few ms until it lands on the user's pod. The miss path answers
  400 here (it places nobody), so a request of a user whose scope is not there yet gets 400
  from the Lua filter and is never balanced onto the right pod by chance. Measured under the
  wrk load (one more shared-core round with arrivals; both cores saturated, and the bench
  process that serves xDS and probes shares them) and with no load. The throughput rounds
  under arrivals carry no probe.
  Alongside: arrival -> this Envoy's delta ACK of the scope table revision holding the user;
- CPU per arrival, with no wrk load: Envoy's utime+stime (``/proc/<pid>/stat``) over a window
  of arrivals minus the same-length window with none, over the arrivals; the same with
  ``time.process_time()`` of this process (the whole control plane side: sticky table, scope
  table, delta encoding, gRPC; wrk and Envoy are other processes).

    python -m bench.churn [--users 10000,100000] [--rate 200] [--seconds 10] [--rounds 3]
    python -m bench.churn --users 1000000 --no-throughput    # load, memory and CPU only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench._common import (
    ENVOY_DIR,
    Figure,
    Scenario,
    envoy,
    free_ports,
    median,
    percentile,
    pin,
    pods_bootstrap,
    round_robin_bootstrap,
    xds_stack,
)
from bench.data_path import LOAD_CPUS, PROXY_CPUS, bound_users, side_by_side
from controlplane.domain import ServiceKey
from controlplane.runtime.envoy import EnvoyProcess, load_bootstrap
from controlplane.runtime.ports import free_port
from controlplane.xds.cache import SnapshotKey
from controlplane.xds.config import NodeGroupSettings, XdsSettings
from controlplane.xds.listeners import XdsListeners
from controlplane.xds.resources import SCOPED, SourceKind
from tests.support.state import MemoryStateSource, service_state

PODS = 4
GROUP = "default"  # envoy/delta.yaml's node cluster
TARGET_RATIO = 0.95  # bound-user throughput vs plain Envoy, static and under arrivals
TARGET_ENVOY_CPU_MS = 5.0  # Envoy CPU per arrival at 100k bound users
TARGET_LIVE_P99_MS = 50.0  # arrival -> scope live, p99 at 100k bound users
TARGETS_FROM = 100_000  # the targets above are set for N >= this
LOAD_CHUNK = 50_000  # users put at once during the initial load
POLL_S = 0.002  # a probe's pause between requests
PROBE_TIMEOUT_S = 2.0
LOAD_TIMEOUT_S = 300.0  # a chunk of the initial load
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S  # fields 14 and 15 of stat(5)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def heap_bytes(process: EnvoyProcess) -> int:
    return int(json.loads(await process.get("/memory"))["allocated"])


def pid_of(process: EnvoyProcess) -> int:
    assert process.process is not None
    return process.process.pid


async def live_ms(
    session: aiohttp.ClientSession, url: str, uid: str, pod: int, started: float
) -> float | None:
    """Ms from ``started`` until a request of ``uid`` through Envoy lands on ``pod``."""
    deadline = started + PROBE_TIMEOUT_S
    while time.perf_counter() < deadline:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            async with session.get(url, headers={"x-uid": uid}) as response:
                body = await response.read()
                if response.status == 200 and json.loads(body)["pod"] == pod:
                    return (time.perf_counter() - started) * 1000
        await asyncio.sleep(POLL_S)
    return None


@dataclass
class Arrivals:
    """What one window of arrivals did."""

    count: int = 0
    seconds: float = 0.0
    live_ms: list[float] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)
    probes: int = 0
    timeouts: int = 0


class Churn:
    """New users arriving at ``rate``/s from this event loop, one ``source.route`` each."""

    def __init__(
        self,
        source: MemoryStateSource,
        key: ServiceKey,
        stack: XdsListeners,
        url: str,
        session: aiohttp.ClientSession,
        rate: float,
    ) -> None:
        self.source, self.key, self.stack, self.url = source, key, stack, url
        self.session, self.rate = session, rate
        self._next = 0  # arrivals so far, over every window (uids stay new)

    async def run(self, stop: asyncio.Event, max_s: float, probe_every: int = 0) -> Arrivals:
        """Arrivals until ``stop`` is set (or ``max_s``); user k arrives at start + k/rate on
        the monotonic clock. Every ``probe_every``-th one (0: none) is timed until live."""
        out = Arrivals()
        probes: list[asyncio.Task[None]] = []
        started = time.perf_counter()
        limit = round(max_s * self.rate)  # bounded in count as well as in time
        while not stop.is_set() and out.count < limit:
            due = started + out.count / self.rate
            if (wait := due - time.perf_counter()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                continue
            uid, pod = f"new-{self._next:07d}", self._next % PODS
            at = time.perf_counter()
            self.source.route(self.key, {uid: pod})
            if probe_every and out.count % probe_every == 0:
                probes.append(asyncio.create_task(self._probe(out, uid, pod, at)))
            out.count += 1
            self._next += 1
        out.seconds = time.perf_counter() - started
        await asyncio.gather(*probes)
        return out

    async def window(self, seconds: float, probe_every: int = 0) -> Arrivals:
        stop = asyncio.Event()
        task = asyncio.create_task(self.run(stop, seconds + 1, probe_every))
        await asyncio.sleep(seconds)
        stop.set()
        return await task

    async def _probe(self, out: Arrivals, uid: str, pod: int, at: float) -> None:
        out.probes += 1
        cache, clients = self.stack.xds.cache, self.stack.xds.clients
        scopes = cache.snapshot(SnapshotKey(GROUP, SourceKind.ADS)).type(SCOPED)

        async def acked() -> None:
            # The user's scope joins the table with the next paced push; then its revision.
            pushed = asyncio.Event()
            unwatch = cache.watch(pushed.set)
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    while "u" + uid not in scopes.versions:
                        await pushed.wait()
                        pushed.clear()
                    revision = cache.users.revision(GROUP)
                    if await clients.scopes_live(GROUP, revision, PROBE_TIMEOUT_S):
                        out.ack_ms.append((time.perf_counter() - at) * 1000)
            except TimeoutError:
                pass
            finally:
                unwatch()

        ack = asyncio.create_task(acked())
        took = await live_ms(self.session, self.url, uid, pod, at)
        await ack
        if took is None:
            out.timeouts += 1
        else:
            out.live_ms.append(took)


@dataclass
class Setup:
    pod_ports: list[int]
    plain_port: int
    connections: int
    rounds: int
    seconds: float
    quiet_s: float
    push_cpu_share: float | None = None  # None: the control plane's default


async def load(
    source: MemoryStateSource, key: ServiceKey, users: dict[str, int], url: str
) -> float:
    """Put ``users`` in chunks, each until its last user lands on its pod; the seconds taken."""
    items = list(users.items())
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for first in range(0, len(items), LOAD_CHUNK):
            chunk = dict(items[first : first + LOAD_CHUNK])
            at = time.perf_counter()
            source.route(key, chunk)
            uid, pod = items[min(first + LOAD_CHUNK, len(items)) - 1]
            while await live_ms(session, url, uid, pod, time.perf_counter()) is None:
                if time.perf_counter() - at > LOAD_TIMEOUT_S:  # bounded: each try is 2 s
                    raise TimeoutError(f"user {uid} not live {LOAD_TIMEOUT_S} s after its chunk")
    return time.perf_counter() - started


async def one_size(
    scenario: Scenario, setup: Setup, users: int, rate: float, throughput: bool
) -> None:
    proxy_port = free_port()
    base = service_state("bench", "game", setup.pod_ports, domains=["*"])
    key = base.service.key
    source = MemoryStateSource([base])
    pacing = {} if setup.push_cpu_share is None else {"scope_push_cpu_share": setup.push_cpu_share}
    settings = XdsSettings(default_group=NodeGroupSettings(listener_port=proxy_port), **pacing)
    stack = await xds_stack(source, settings, miss_status=400)
    ours = envoy(load_bootstrap(ENVOY_DIR / "delta.yaml", xds_port=stack.grpc_port))
    url = f"http://127.0.0.1:{proxy_port}/"
    label = f"{users:,} bound users"
    targets = users >= TARGETS_FROM
    try:
        await ours.start()
        pid = pid_of(ours)
        pin(pid, PROXY_CPUS)
        async with aiohttp.ClientSession() as session:

            async def listening() -> bool:  # no user yet: the Lua filter answers 400
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url, headers={"x-uid": "nobody"}) as response:
                        return response.status == 400
                return False

            for _ in range(200):  # bounded: ~20 s
                if await listening():
                    break
                await asyncio.sleep(0.1)
            else:
                raise TimeoutError("Envoy's listener never came up")
            await asyncio.sleep(0.5)
            heap0, rss0, own0 = await heap_bytes(ours), rss_bytes(pid), rss_bytes(os.getpid())
            bound = bound_users(users, PODS)
            load_s = await load(source, key, bound, url)
            await asyncio.sleep(1.0)
            heap, rss, own = await heap_bytes(ours), rss_bytes(pid), rss_bytes(os.getpid())
            print(f"  {label}: loaded in {load_s:.1f} s", flush=True)
            scenario.add(
                Figure(
                    f"initial load, {label}: route() -> the last user lands on its pod",
                    load_s,
                    "s",
                    higher_is_better=False,
                    note=f"in chunks of {LOAD_CHUNK:,}, each chunk one delta push",
                )
            )
            memory = (
                ("Envoy heap", heap0, heap, "Envoy's /memory allocated"),
                ("Envoy RSS", rss0, rss, "Envoy's RSS"),
                # This process: sticky table, scope table, delta stream state, the users list.
                ("control plane RSS", own0, own, "this process's RSS"),
            )
            for what, before, after, source_of in memory:
                scenario.add(
                    Figure(
                        f"{what} per bound user, {label}",
                        (after - before) / users,
                        "bytes",
                        higher_is_better=False,
                        note=f"{source_of}: {before / 2**20:.1f} MiB with no user, "
                        f"{after / 2**20:.1f} MiB with {users:,}",
                    )
                )
            churn = Churn(source, key, stack, url, session, rate)
            probe_every = max(1, round(rate / 20))  # ~20 probed arrivals a second
            if throughput:
                await throughput_figures(scenario, setup, churn, proxy_port, bound, label, targets)
            await quiet_figures(scenario, setup, churn, pid, label, targets, probe_every)
            nacks = [
                t.nack_message
                for envoy_view in stack.xds.envoys()
                for t in envoy_view.types.values()
                if t.nack_message
            ]
            if nacks:
                raise RuntimeError(f"Envoy rejected a push: {nacks[:3]}")
    finally:
        await ours.close()
        await stack.stop()


async def throughput_figures(
    scenario: Scenario,
    setup: Setup,
    churn: Churn,
    proxy_port: int,
    bound: dict[str, int],
    label: str,
    targets: bool,
) -> None:
    uids = list(bound)
    size = len(uids)

    async def shared(rounds: int) -> list[tuple[float, float]]:
        return await side_by_side(
            setup.plain_port, proxy_port, uids, rounds, setup.seconds, setup.connections
        )

    async def with_arrivals(rounds: int, probe_every: int) -> tuple[list[Any], Arrivals]:
        stop = asyncio.Event()
        bound_s = rounds * (setup.seconds + 5) + 10
        arriving = asyncio.create_task(churn.run(stop, bound_s, probe_every))
        try:
            pairs = await shared(rounds)
        finally:
            stop.set()
        return pairs, await arriving

    static = await shared(setup.rounds)
    # Throughput under arrivals with no probe (probes are requests through Envoy too) ...
    moving, arrivals = await with_arrivals(setup.rounds, 0)
    # ... then one more round for the arrivals' latency under the same load.
    _, probed = await with_arrivals(1, max(1, round(churn.rate / 20)))
    rate = arrivals.count / arrivals.seconds
    for what, pairs, note in (
        ("static (no arrivals)", static, ""),
        (
            f"{churn.rate:g}/s arriving",
            moving,
            f"{arrivals.count:,} arrivals over {arrivals.seconds:.1f} s ({rate:.0f}/s)",
        ),
    ):
        baseline = median([a for a, _ in pairs])
        scenario.add(
            Figure(
                f"throughput, {label}, {what}, sharing the core with the baseline",
                median([b for _, b in pairs]),
                "req/s",
                "plain Envoy round robin, same pods, same core, same moment",
                baseline,
                target=TARGET_RATIO * baseline,
                note=(note + "; " if note else "") + f"target: >= {TARGET_RATIO}x the baseline",
            )
        )
        kind = "static" if not note else "arriving"
        scenario.series[f"rps_{kind}_baseline_{size}"] = [a for a, _ in pairs]
        scenario.series[f"rps_{kind}_ours_{size}"] = [b for _, b in pairs]
    live_figures(scenario, probed, f"{label}, under the wrk load", targets)


def live_figures(scenario: Scenario, arrivals: Arrivals, label: str, targets: bool) -> None:
    if not arrivals.probes:
        raise RuntimeError("no arrival was probed")
    note = (
        f"{len(arrivals.live_ms)} of {arrivals.probes} probed arrivals live, "
        f"{arrivals.timeouts} not within {PROBE_TIMEOUT_S:g} s; a request every "
        f"{POLL_S * 1000:g} ms until it lands on the user's pod"
    )
    # A probe that timed out counts as the timeout (a lower bound of its true time).
    values = arrivals.live_ms + [PROBE_TIMEOUT_S * 1000] * arrivals.timeouts
    for q in (50, 99):
        scenario.add(
            Figure(
                f"arrival -> scope live (a request lands on its pod) p{q}, {label}",
                percentile(values, q),
                "ms",
                f"arrival -> Envoy's delta ACK of the revision holding it, p{q}",
                percentile(arrivals.ack_ms, q) if arrivals.ack_ms else None,
                higher_is_better=False,
                target=TARGET_LIVE_P99_MS if targets and q == 99 else None,
                note=note,
            )
        )
    key = label.split(",")[0].replace(" bound users", "").replace(",", "")
    where = "loaded" if "wrk" in label else "quiet"
    scenario.series[f"live_ms_{where}_{key}"] = sorted(arrivals.live_ms)


async def quiet_figures(
    scenario: Scenario,
    setup: Setup,
    churn: Churn,
    pid: int,
    label: str,
    targets: bool,
    probe_every: int,
) -> None:
    """No wrk load: CPU per arrival (arrivals window minus an idle one), then latency."""
    window = setup.quiet_s
    # Envoy may still work through a backlog of arrivals under load: wait until it is done.
    backlog = churn.stack.xds.cache.users.revision(GROUP)
    if not await churn.stack.xds.clients.scopes_live(GROUP, backlog, 120):
        raise TimeoutError("Envoy did not catch up with the arrivals within 120 s")
    await asyncio.sleep(0.5)
    envoy0, ours0, wall0 = cpu_s(pid), time.process_time(), time.perf_counter()
    await asyncio.sleep(window)
    idle_envoy, idle_ours = cpu_s(pid) - envoy0, time.process_time() - ours0
    idle_wall = time.perf_counter() - wall0
    envoy0, ours0, wall0 = cpu_s(pid), time.process_time(), time.perf_counter()
    arrivals = await churn.window(window)
    # Until Envoy ACKed the last arrival: the CPU of a backlog is counted too.
    revision = churn.stack.xds.cache.users.revision(GROUP)
    if not await churn.stack.xds.clients.scopes_live(GROUP, revision, 60):
        raise TimeoutError("Envoy did not acknowledge the arrivals within 60 s")
    busy_envoy, busy_ours = cpu_s(pid) - envoy0, time.process_time() - ours0
    scale = (time.perf_counter() - wall0) / idle_wall  # the idle CPU over the same length
    per_envoy = (busy_envoy - idle_envoy * scale) / arrivals.count * 1000
    per_ours = (busy_ours - idle_ours * scale) / arrivals.count * 1000
    rate = arrivals.count / arrivals.seconds
    scenario.add(
        Figure(
            f"Envoy CPU per arrival, {label}",
            per_envoy,
            "ms",
            higher_is_better=False,
            target=TARGET_ENVOY_CPU_MS if targets else None,
            note=f"/proc/<pid>/stat utime+stime: {busy_envoy:.2f} s over {arrivals.count:,} "
            f"arrivals in {arrivals.seconds:.1f} s ({rate:.0f}/s), minus {idle_envoy:.2f} s "
            f"over {idle_wall:.1f} s with none; no wrk load; clock tick {TICK_S * 1000:g} ms",
        )
    )
    scenario.add(
        Figure(
            f"control plane CPU per arrival, {label}",
            per_ours,
            "ms",
            higher_is_better=False,
            note=f"time.process_time() of the bench process (sticky table, scope table, delta "
            f"push, gRPC): {busy_ours:.2f} s over the arrivals, minus {idle_ours:.2f} s idle",
        )
    )
    quiet = await churn.window(window, probe_every)
    live_figures(scenario, quiet, f"{label}, no load", targets)


async def run(
    users: list[int],
    rate: float,
    seconds: float,
    rounds: int,
    connections: int = 32,
    quiet_s: float = 5.0,
    throughput: bool = True,
    push_cpu_share: float | None = None,
) -> Scenario:
    scenario = Scenario(
        "churn",
        "Churn: users arriving while bound users run through Envoy vs plain Envoy round robin",
        f"python -m bench.churn --users {','.join(map(str, users))} --rate {rate:g} "
        f"--seconds {seconds:g} --rounds {rounds} --quiet {quiet_s:g}"
        + ("" if throughput else " --no-throughput")
        + ("" if push_cpu_share is None else f" --push-cpu-share {push_cpu_share:g}"),
        params={
            "pods": PODS,
            "rate_per_s": rate,
            "connections": connections,
            "seconds_per_run": seconds,
            "rounds": rounds,
            "arrival_window_s": rounds * seconds,
            "quiet_window_s": quiet_s,
            "proxy_workers": 1,
            "transport": "delta ADS",
            "scope_push_cpu_share": push_cpu_share or XdsSettings().scope_push_cpu_share,
        },
    )
    setup = Setup(
        free_ports(PODS), free_port(), connections, rounds, seconds, quiet_s, push_cpu_share
    )
    pods = envoy(pods_bootstrap(setup.pod_ports))
    plain = envoy(round_robin_bootstrap(setup.plain_port, setup.pod_ports))
    try:
        for process in (pods, plain):
            await process.start()
            pin(pid_of(process), LOAD_CPUS if process is pods else PROXY_CPUS)
        for count in users:
            started = time.perf_counter()
            await one_size(scenario, setup, count, rate, throughput)
            print(f"  ({count:,} users: {time.perf_counter() - started:.0f} s)", flush=True)
    finally:
        for process in (plain, pods):
            await process.close()
    return scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="10000,100000")
    parser.add_argument("--rate", type=float, default=200.0, help="arrivals per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="shared-core runs per phase")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--quiet", type=float, default=5.0, help="each no-load window, s")
    parser.add_argument("--no-throughput", action="store_true", help="load, memory, CPU only")
    parser.add_argument(
        "--push-cpu-share", type=float, help="xds.scope_push_cpu_share (default: the setting's)"
    )
    args = parser.parse_args()
    users = [int(u) for u in args.users.split(",")]
    asyncio.run(
        run(
            users,
            args.rate,
            args.seconds,
            args.rounds,
            args.connections,
            args.quiet,
            not args.no_throughput,
            args.push_cpu_share,
        )
    )


if __name__ == "__main__":
    main()
