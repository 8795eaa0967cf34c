"""Fleet failover: kill -9 of a pod on a fleet of separate hosts (network namespaces).

The fleet of the fleet tests (tests/support/fleet): Redis, two gateways each an Envoy with a
control-plane replica beside it, a third Envoy whose replica is on another host, four demo
pods, each on a host of its own. The pod's users keep asking through all three Envoys while
it is killed. Measured from the kill: the moment every Envoy stops routing to it (no moved
user's scope names it, and its endpoint is out of the Envoy's balancing) and the moment the
binding table holds no user on it. With the signals over the network only (load reports
every 0.2 s, the admin APIs Envoys name; no file shared by an Envoy and a replica), against
the same fleet with the sidecar replicas tailing their Envoys' outlier event logs and no
network signal (the baseline, same run). Active health checks every 30 s in both, so that
neither is found by them.

Needs root and iproute2 (``ip netns``).

    python -m bench.fleet_failover [--users 60] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from bench._common import Figure, Scenario, until
from controlplane.runtime.stack import NAMESPACE, SERVICE
from tests.fleet.traffic import place, routed_by_every_envoy, serving_in
from tests.support.fleet import Fleet, FleetConfig, unavailable_reason

TARGET_S = 1.0
GATEWAYS = ("gw1", "gw2", "gw3")
TIMEOUT_S = 15.0


async def _kill_one_pod(fleet: Fleet, prefix: str, users: int) -> tuple[float, float]:
    """Kill the pod of ``prefix``-0 while its users ask through every gateway: seconds until
    every Envoy stops routing to it, and until no user is bound to it."""
    uids = [f"{prefix}-{i}" for i in range(users)]
    placed = await place(fleet, uids, GATEWAYS[0])
    failed = placed[f"{prefix}-0"]
    victims = [uid for uid, pod in placed.items() if pod == failed]
    # Each Envoy's replica learns a user from its first request through that Envoy. (Not
    # checked here: on a busy machine a miss path past its 1 s timeout is balanced.)
    for gateway in GATEWAYS[1:]:
        await asyncio.gather(*(fleet.ask(gateway, uid) for uid in victims))

    async def routed() -> bool:
        return await routed_by_every_envoy(fleet, victims)

    await until(routed, timeout_s=30, every_s=0.1)
    dead_routes = f"stateful-route:{NAMESPACE}/{SERVICE}={failed}"

    async def routes_to_it(gateway: str) -> bool:
        if await serving_in(fleet, gateway, failed):
            return True
        dump = json.dumps(
            await fleet.gateways[gateway].envoy.config_dump("dynamic_scoped_route_configs")
        )
        return dead_routes in dump

    stop = asyncio.Event()

    async def keep_asking() -> None:
        for _ in range(int(TIMEOUT_S / 0.01)):  # bounded
            if stop.is_set():
                return
            for gateway in GATEWAYS:
                await asyncio.gather(*(fleet.ask(gateway, uid) for uid in victims))

    asking = asyncio.create_task(keep_asking())
    await asyncio.sleep(0.3)  # under load before the kill
    fleet.pods[failed].process.kill()
    killed = time.monotonic()
    stopped = rebound = None
    try:
        while stopped is None or rebound is None:
            if time.monotonic() - killed > TIMEOUT_S:
                raise TimeoutError(f"not within {TIMEOUT_S}s: stopped {stopped}, rebound {rebound}")
            if stopped is None and not any(
                await asyncio.gather(*(routes_to_it(g) for g in GATEWAYS))
            ):
                stopped = time.monotonic() - killed
            if rebound is None and (await fleet.pods_state())[failed]["bound_users"] == 0:
                rebound = time.monotonic() - killed
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.gather(asking, return_exceptions=True)
    return stopped, rebound


async def measure(network: bool, users: int, runs: int) -> tuple[list[float], list[float]]:
    """Per run (one pod killed each, up to three of the four): seconds to stop, to re-bind."""
    config = FleetConfig(log_tail=not network, network_signals=network, health_interval_s=30.0)
    fleet = await Fleet(config).start()
    stopped, rebound = [], []
    try:
        for run in range(runs):
            s, r = await _kill_one_pod(fleet, f"fleet-fo-{run}", users)
            stopped.append(s)
            rebound.append(r)
    finally:
        await fleet.stop()
    return stopped, rebound


async def run(users: int, runs: int) -> Scenario:
    scenario = Scenario(
        "fleet_failover",
        "Fleet failover: kill -9 of a pod, signals over the network vs the log tail",
        f"python -m bench.fleet_failover --users {users} --runs {runs}",
        params={
            "users": users,
            "runs": runs,
            "pods": 4,
            "envoys": len(GATEWAYS),
            "replicas": 2,
            "load_report_interval_s": FleetConfig().load_report_interval_s,
            "health_check_interval_s": 30.0,
        },
    )
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"no fleet on this machine: {reason}")
    network_stop, network_rebound = await measure(True, users, runs)
    log_stop, log_rebound = await measure(False, users, runs)
    scenario.series = {
        "network_stop_s": network_stop,
        "network_rebound_s": network_rebound,
        "log_stop_s": log_stop,
        "log_rebound_s": log_rebound,
    }
    runs_note = f"median of {runs} kills"
    scenario.add(
        Figure(
            "kill -> every Envoy stops routing to the pod (network signals only)",
            statistics.median(network_stop),
            "s",
            baseline="sidecars tailing Envoy's event log",
            baseline_value=statistics.median(log_stop),
            higher_is_better=False,
            target=TARGET_S,
            note=f"{runs_note}; slowest {max(network_stop):.2f} s (log tail {max(log_stop):.2f} s)",
        )
    )
    scenario.add(
        Figure(
            "kill -> bindings re-written (network signals only)",
            statistics.median(network_rebound),
            "s",
            baseline="sidecars tailing Envoy's event log",
            baseline_value=statistics.median(log_rebound),
            higher_is_better=False,
            target=TARGET_S,
            note=(
                f"{runs_note}; slowest {max(network_rebound):.2f} s "
                f"(log tail {max(log_rebound):.2f} s)"
            ),
        )
    )
    return scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.runs <= 3:
        parser.error("--runs: 1 to 3 (each run kills one of the four pods)")
    asyncio.run(run(args.users, args.runs))


if __name__ == "__main__":
    main()
