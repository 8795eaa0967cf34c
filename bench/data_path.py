"""Data path: bound users through our Envoy config vs plain Envoy round robin, same pods.

Ours: Envoy (ADS from the real xDS server and snapshot cache) with N users in the service's
exact-match map on ``x-uid``; every request names a bound user, so Envoy pins it to its pod
(header mutation + stateful_session) without asking the miss path. Baseline in the same run:
the same Envoy binary with one static route to a ROUND_ROBIN cluster over the same pods. Both
proxies run one worker thread; the pods are one C++ Envoy answering a fixed body per port (far
faster than the proxy, unlike the Python demo pods); wrk sends the load with a Lua script that
sets ``x-uid`` from the list of bound users.

    python -m bench.data_path [--users 1000,10000] [--seconds 8] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp

from bench._common import (
    ENVOY_DIR,
    Figure,
    Scenario,
    envoy,
    free_ports,
    median,
    pin,
    pods_bootstrap,
    round_robin_bootstrap,
    run_wrk,
)
from controlplane.domain import ServiceState
from controlplane.runtime.envoy import load_bootstrap
from controlplane.runtime.ports import free_port
from controlplane.xds.config import NodeGroupSettings, XdsSettings
from tests.support.state import MemoryStateSource, service_state
from tests.support.xds_stack import XdsStack

PODS = 4
# The proxy under test (ours or the baseline) has CPU 0; wrk and the pods share CPU 1.
PROXY_CPUS, LOAD_CPUS = {0}, {1}
TARGET_RATIO = 0.9  # issue #4: >= 0.9x of plain Envoy with 10,000 bound users


def users_state(base: ServiceState, users: int) -> ServiceState:
    return ServiceState(base.service, base.pods, {f"user-{i:06d}": i % PODS for i in range(users)})


async def routed_to_their_pods(url: str, state: ServiceState, sample: int = 200) -> bool:
    """Whether a sample of users (the last ones added among them) land on their own pod."""
    uids = list(state.routes)[-sample:]
    async with aiohttp.ClientSession() as session:
        for uid in uids:
            async with session.get(url, headers={"x-uid": uid}) as response:
                if response.status != 200:
                    return False
                if json.loads(await response.text())["pod"] != state.routes[uid]:
                    return False
    return True


async def alternate(
    plain_port: int, proxy_port: int, uids: list[str], rounds: int, seconds: float, connections: int
) -> dict[str, list[dict[str, float]]]:
    """Baseline and ours in turns (this machine's speed drifts): every run's wrk summary."""
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "sticky": []}
    for _ in range(rounds):
        for label, port in (("baseline", plain_port), ("sticky", proxy_port)):
            result = await run_wrk(
                f"http://127.0.0.1:{port}/",
                uids,
                seconds=seconds,
                connections=connections,
                cpus=LOAD_CPUS,
            )
            if result["errors"]:
                raise RuntimeError(f"{label} run with {len(uids)} users had errors: {result}")
            runs[label].append(result)
    return runs


async def run(users: list[int], seconds: float, connections: int, rounds: int) -> Scenario:
    scenario = Scenario(
        "data_path",
        "Data path: bound users through Envoy vs plain Envoy round robin",
        f"python -m bench.data_path --users {','.join(map(str, users))} "
        f"--seconds {seconds:g} --rounds {rounds} --connections {connections}",
        params={
            "pods": PODS,
            "connections": connections,
            "seconds_per_run": seconds,
            "rounds": rounds,
            "proxy_workers": 1,
        },
    )
    pod_ports = free_ports(PODS)
    proxy_port, plain_port = free_port(), free_port()
    base = service_state("bench", "game", pod_ports, domains=["*"])
    source = MemoryStateSource([base])
    settings = XdsSettings(default_group=NodeGroupSettings(listener_port=proxy_port))
    stack = await XdsStack(source, settings).start()
    pods = envoy(pods_bootstrap(pod_ports))
    plain = envoy(round_robin_bootstrap(plain_port, pod_ports))
    ours = envoy(load_bootstrap(ENVOY_DIR / "ads.yaml", xds_port=stack.grpc_port))
    try:
        for process in (pods, plain, ours):
            await process.start()
            assert process.process is not None
            pin(process.process.pid, LOAD_CPUS if process is pods else PROXY_CPUS)
        # The load generator and pods alone, on their CPU: what no proxy figure can exceed.
        ceiling = await run_wrk(
            f"http://127.0.0.1:{pod_ports[0]}/",
            ["nobody"],
            seconds=seconds,
            connections=connections,
            cpus=LOAD_CPUS,
        )
        scenario.params["load_generator_ceiling_rps"] = round(ceiling["rps"])
        print(f"  wrk straight to one pod (no proxy): {ceiling['rps']:,.0f} req/s", flush=True)
        for count in users:
            state = users_state(base, count)
            source.put(state)
            url = f"http://127.0.0.1:{proxy_port}/"
            for _ in range(200):  # until Envoy carries the routes (bounded: ~20 s)
                if await routed_to_their_pods(url, state):
                    break
                await asyncio.sleep(0.1)
            else:
                raise TimeoutError(f"Envoy did not route {count} users to their pods")
            uids = list(state.routes)
            runs = await alternate(plain_port, proxy_port, uids, rounds, seconds, connections)
            baseline, sticky = (
                {key: median([r[key] for r in runs[label]]) for key in runs[label][0]}
                for label in ("baseline", "sticky")
            )
            label = f"{count:,} bound users"
            scenario.add(
                Figure(
                    f"throughput, {label}",
                    sticky["rps"],
                    "req/s",
                    "plain Envoy round robin, same pods",
                    baseline["rps"],
                    target=TARGET_RATIO * baseline["rps"] if count >= 10_000 else None,
                    note="target: >= 0.9x the baseline" if count >= 10_000 else "",
                )
            )
            for q in ("p50", "p99"):
                scenario.add(
                    Figure(
                        f"latency {q}, {label}",
                        sticky[f"{q}_ms"],
                        "ms",
                        "plain Envoy round robin",
                        baseline[f"{q}_ms"],
                        higher_is_better=False,
                    )
                )
            for label in ("baseline", "sticky"):
                scenario.series[f"rps_{label}_{count}"] = [r["rps"] for r in runs[label]]
    finally:
        for process in (ours, plain, pods):
            await process.close()
        await stack.stop()
    return scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="1000,10000")
    parser.add_argument("--seconds", type=float, default=3.0, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="baseline/ours turns per size")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    users = [int(u) for u in args.users.split(",")]
    asyncio.run(run(users, args.seconds, args.connections, args.rounds))


if __name__ == "__main__":
    main()
