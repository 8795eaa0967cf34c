"""Every benchmark scenario, each against a baseline measured in the same run.

    python -m bench --quick          # < 2 minutes on 2 cores
    python -m bench                  # full sizes, ~5 minutes on 2 cores
    python -m bench --only data_path,failover

Writes bench/results/latest.json (or --out), then docs/benchmarks.md and its plots from it
(``python -m bench.report`` does that part alone). Loopback only; every scenario is bounded in
time and requests. The data path needs ``wrk`` (Debian: apt-get install -y wrk); the fleet
failover needs root and iproute2 (network namespaces).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import (
    binding_memory,
    churn,
    data_path,
    failover,
    fleet_failover,
    miss_path,
    redis_topologies,
    route_manager,
    scale,
    xds_convergence,
    xds_rest_throughput,
)
from bench._common import Scenario
from bench.report import DEFAULT_RESULTS, write_report

Plan = dict[str, Callable[[], Awaitable[Scenario]]]


def plan(quick: bool) -> Plan:
    """Each scenario with its sizes: small ones for --quick, the issue's sizes otherwise."""
    if quick:
        return {
            "data_path": lambda: data_path.run([1000, 10_000], 2, 32, 2),
            "churn": lambda: churn.run([10_000], 200, 3, 2, quiet_s=3),
            "miss_path": lambda: miss_path.run(500, 64, first=1000, bound=10_000),
            "xds_convergence": lambda: xds_convergence.run(50, 10, 8),
            "discovery_rate": lambda: asyncio.to_thread(xds_rest_throughput.run, 1.0, 16),
            "failover": lambda: failover.run(200),
            "fleet_failover": lambda: fleet_failover.run(40, 2),
            "scale": lambda: scale.run(20_000, 1000),
            "redis": lambda: route_manager.scenario(5000, 256),
            "binding_memory": lambda: binding_memory.scenario(20_000),
        }
    return {
        "data_path": lambda: data_path.run([1000, 10_000, 100_000], 3, 32, 3),
        "churn": lambda: churn.run([10_000, 100_000], 200, 10, 3, quiet_s=5),
        "miss_path": lambda: miss_path.run(2000, 64, first=5000, bound=100_000),
        "xds_convergence": lambda: xds_convergence.run(200, 10, 50),
        "discovery_rate": lambda: asyncio.to_thread(xds_rest_throughput.run, 5.0, 16),
        "failover": lambda: failover.run(10_000),
        "fleet_failover": lambda: fleet_failover.run(60, 3),
        "scale": lambda: scale.run(100_000, 1000),
        "redis": lambda: route_manager.scenario(30_000, 256),
        "binding_memory": lambda: binding_memory.scenario(100_000),
        "redis_topologies": lambda: redis_topologies.scenario(2, 12, 30_000, 256, 1),
    }


async def run_all(chosen: Plan) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, scenario in chosen.items():
        print(f"\n== {name}", flush=True)
        started = time.perf_counter()
        try:
            # Bounded: a scenario that hangs is recorded as failed, the others still run.
            result = await asyncio.wait_for(scenario(), timeout=900)
        except Exception as exc:
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            continue
        result.seconds = time.perf_counter() - started
        results[name] = result.to_json()
        print(f"   ({result.seconds:.1f} s)", flush=True)
    return results


def machine() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, < 2 minutes")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--no-report", action="store_true", help="write only the JSON")
    args = parser.parse_args()
    chosen = plan(args.quick)
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - chosen.keys()
        if unknown:
            parser.error(f"unknown scenarios {sorted(unknown)}; choose from {sorted(chosen)}")
        chosen = {name: chosen[name] for name in wanted}
    started = time.perf_counter()
    scenarios = asyncio.run(run_all(chosen))
    command = "python -m bench" + (" --quick" if args.quick else "")
    document = {
        "mode": "quick" if args.quick else "full",
        "command": command + (f" --only {args.only}" if args.only else ""),
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "scenarios": scenarios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"\nwrote {args.out} ({document['seconds']} s)")
    if not args.no_report:
        for path in write_report(args.out):
            print(f"wrote {path}")
    if any("error" in s for s in scenarios.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
