"""Convergence: a state change -> visible in a real Envoy's admin, for each xDS transport.

200 services x 10 pods. Each round changes one pod's weight of a random service and polls
Envoy's ``/clusters`` (filtered to that cluster) until the new weight shows. Baseline in the same
run: plain REST polling (no long-poll, refresh_delay 1 s), the way Envoy's REST is usually run.

    python -m bench.xds_convergence [--services 200] [--pods 10] [--rounds 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path

from bench._common import Figure, Scenario
from controlplane.domain import ServiceKey
from controlplane.runtime.envoy import EnvoyProcess, load_bootstrap
from controlplane.runtime.ports import free_port
from controlplane.xds.config import NodeGroupSettings, XdsSettings
from tests.support.state import MemoryStateSource, service_state
from tests.support.xds_stack import XdsStack

ENVOY_DIR = Path(__file__).parents[1] / "envoy"
# endpoint_weights gives a healthy, unloaded pod weight * 100 (headroom) * 2 (healthy).
WEIGHT_SCALE = 200


async def visible_weight(envoy: EnvoyProcess, cluster: str, weight: int) -> bool:
    body = json.loads(await envoy.get(f"/clusters?format=json&filter=^{cluster}$"))
    for status in body.get("cluster_statuses", []):
        for host in status.get("host_statuses", []):
            if (
                host["address"]["socket_address"]["port_value"] == 20000
                and host.get("weight") == weight
            ):
                return True
    return False


async def measure(
    transport: str, args: argparse.Namespace, *, baseline: bool = False
) -> list[float]:
    source = MemoryStateSource(
        [
            service_state("bench", f"svc-{i}", [20000 + j for j in range(args.pods)])
            for i in range(args.services)
        ]
    )
    settings = XdsSettings(
        default_group=NodeGroupSettings(listener_port=free_port()),
        long_poll_hold_s=0 if baseline else 20.0,
        rest_refresh_delay_s=1.0 if baseline else 0.01,
    )
    stack = await XdsStack(source, settings).start()
    port = stack.rest_port if transport == "rest" else stack.grpc_port
    config = load_bootstrap(ENVOY_DIR / f"{transport}.yaml", xds_port=port)
    if baseline:
        for kind in ("cds_config", "lds_config"):
            config["dynamic_resources"][kind]["api_config_source"]["refresh_delay"] = "1s"
    envoy = EnvoyProcess(config, start_timeout_s=120)
    latencies: list[float] = []
    try:
        await envoy.start()
        rng = random.Random(7)
        for round_ in range(args.rounds if not baseline else max(5, args.rounds // 5)):
            name = f"svc-{rng.randrange(args.services)}"
            weight = 1 + round_ % 999
            await asyncio.sleep(0.05)  # let Envoy settle (and re-poll) between rounds
            started = time.perf_counter()
            source.update_pod(ServiceKey("bench", name), 0, weight=weight)
            while not await visible_weight(envoy, f"bench/{name}", weight * WEIGHT_SCALE):
                if time.perf_counter() - started > 10:
                    raise TimeoutError(f"{transport}: no convergence for {name}")
                # Envoy answers admin requests on the thread that applies xDS: leave it room.
                await asyncio.sleep(0.001)
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        await envoy.close()
        await stack.stop()
    return latencies


def report(label: str, values: list[float]) -> None:
    print(
        f"{label:<28} n={len(values):<3} median={statistics.median(values):7.1f} ms "
        f"p90={statistics.quantiles(values, n=10)[-1]:7.1f} ms max={max(values):7.1f} ms"
    )


async def run(services: int, pods: int, rounds: int) -> Scenario:
    args = argparse.Namespace(services=services, pods=pods, rounds=rounds)
    scenario = Scenario(
        "xds_convergence",
        f"xDS convergence: {services} services x {pods} pods, state change -> visible in Envoy",
        f"python -m bench.xds_convergence --services {services} --pods {pods} --rounds {rounds}",
        params={"services": services, "pods": pods, "rounds": rounds},
    )
    print(f"convergence, {args.services} services x {args.pods} pods")
    baseline = await measure("rest", args, baseline=True)
    report("baseline: REST poll 1 s", baseline)
    scenario.series["baseline_rest_poll_1s"] = baseline
    for transport in ("rest", "ads", "delta"):
        values = await measure(transport, args)
        report(f"{transport}", values)
        scenario.series[transport] = values
        label = TRANSPORTS[transport]
        for stat, pick in (("median", statistics.median), ("max", max)):
            scenario.add(
                Figure(
                    f"{label}, {stat}",
                    pick(values),
                    "ms",
                    "REST polling every 1 s (no long-poll)",
                    pick(baseline),
                    higher_is_better=False,
                )
            )
    return scenario


TRANSPORTS = {"rest": "REST long-poll", "ads": "ADS (SotW)", "delta": "delta ADS"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.services, args.pods, args.rounds))


if __name__ == "__main__":
    main()
