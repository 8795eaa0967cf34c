"""What the benchmarks share: figures with their baselines, percentiles, wrk, static Envoys.

A scenario returns a ``Scenario``: its figures (each with the baseline measured in the same run
and the ratio between them, and the target if the project set one) and, for plots, a few
small series. ``python -m bench`` collects them into bench/results/latest.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from controlplane.domain import NewUserLimits
from controlplane.runtime.envoy import EnvoyProcess
from controlplane.runtime.ports import free_port
from controlplane.xds.config import XdsSettings
from controlplane.xds.listeners import XdsListeners
from controlplane.xds.naming import MISS_PATH
from controlplane.xds.server import XdsServer
from controlplane.xds.source import StateSource

ENVOY_DIR = Path(__file__).parents[1] / "envoy"


@dataclass
class Figure:
    """One measured number, next to its same-run baseline (higher_is_better says which way)."""

    name: str
    value: float
    unit: str
    baseline: str = ""  # what the baseline is, in words
    baseline_value: float | None = None
    higher_is_better: bool = True
    target: float | None = None  # the project's goal for ``value`` (same unit)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """How many times better than the baseline (>1: better), whichever way is better."""
        if self.baseline_value in (None, 0) or self.value == 0:
            return None
        assert self.baseline_value is not None
        if self.higher_is_better:
            return self.value / self.baseline_value
        return self.baseline_value / self.value

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v not in (None, "")}
        data["value"] = _round(self.value)
        if self.baseline_value is not None:
            data["baseline_value"] = _round(self.baseline_value)
        if self.ratio is not None:
            data["ratio"] = round(self.ratio, 3)
        if self.met is not None:
            data["met"] = self.met
        return data

    def line(self) -> str:
        text = f"  {self.name}: {_human(self.value)} {self.unit}"
        if self.baseline_value is not None:
            text += f"  | baseline ({self.baseline}): {_human(self.baseline_value)} {self.unit}"
        if self.ratio is not None:
            text += f"  | {self.ratio:.2f}x"
        if self.target is not None:
            sign = ">=" if self.higher_is_better else "<="
            text += f"  | target {sign} {_human(self.target)}: {'met' if self.met else 'MISSED'}"
        return text


@dataclass
class Scenario:
    name: str
    title: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    # Small lists of numbers for the plots (e.g. convergence samples in ms).
    series: dict[str, list[float]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(figure.line(), flush=True)
        return figure

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "command": self.command,
            "params": self.params,
            "seconds": round(self.seconds, 1),
            "figures": [f.to_json() for f in self.figures],
            "series": {k: [_round(v) for v in vs] for k, vs in self.series.items()},
        }


def _round(value: float) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    digits = max(0, 3 - math.floor(math.log10(abs(value))))
    return round(value, digits)


def _human(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


async def rate(count: int, concurrency: int, one: Callable[[int], Awaitable[object]]) -> float:
    """Calls per second of ``one(i)`` for i in range(count), ``concurrency`` in flight."""
    next_index = iter(range(count))

    async def worker() -> None:
        for i in next_index:
            await one(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, every_s: float) -> float:
    """Poll ``check`` until true; the seconds it took (TimeoutError past ``timeout_s``)."""
    started = time.perf_counter()
    while not await check():
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(f"not true within {timeout_s}s")
        await asyncio.sleep(every_s)
    return time.perf_counter() - started


# -- the xDS server alone (no Redis, no manager) ----------------------------------------------


async def xds_stack(
    source: StateSource, settings: XdsSettings | None = None, miss_status: int = 503
) -> XdsListeners:
    """The real xDS server over ``source`` on free REST and gRPC ports, started; ``stop()`` it.

    Users enter Envoy's routes through ``source.sticky`` (``MemoryStateSource.route``), as
    the miss path puts them there. The miss path itself places nobody: it answers
    ``miss_status``; with 503 Envoy's Lua filter balances the request, with 400 it answers
    400 itself (a request of a user with no scope yet is then told from a routed one).
    """

    async def place_nobody(_: web.Request) -> web.Response:
        return web.Response(status=miss_status, text="the benchmark places users itself")

    stack = XdsListeners(
        XdsServer(source, settings), extra_routes=[web.post(MISS_PATH, place_nobody)]
    )
    await stack.start()
    return stack


# -- Envoy as a fast upstream and as a plain round-robin proxy ---------------------------------


def envoy(config: dict[str, Any], workers: int = 1, **kwargs: Any) -> EnvoyProcess:
    """An Envoy with a fixed number of worker threads (the default is one per core)."""
    return EnvoyProcess(config, extra_args=("--concurrency", str(workers)), **kwargs)


def _admin() -> dict[str, Any]:
    return {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}


def _http_listener(name: str, port: int, route_config: dict[str, Any]) -> dict[str, Any]:
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "route_config": route_config,
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }


def pods_bootstrap(ports: Sequence[int]) -> dict[str, Any]:
    """One Envoy answering as N pods: listener i answers ``{"pod": i}`` with no upstream.

    C++ answering a fixed body is far faster than the proxy under test, so the pods are not
    what a throughput figure measures (the Python demo pods would be).
    """
    listeners = [
        _http_listener(
            f"pod-{i}",
            port,
            {
                "virtual_hosts": [
                    {
                        "name": "pod",
                        "domains": ["*"],
                        "routes": [
                            {
                                "match": {"prefix": "/"},
                                "direct_response": {
                                    "status": 200,
                                    "body": {"inline_string": json.dumps({"pod": i})},
                                },
                            }
                        ],
                    }
                ]
            },
        )
        for i, port in enumerate(ports)
    ]
    return {"admin": _admin(), "static_resources": {"listeners": listeners}}


def round_robin_bootstrap(port: int, pod_ports: Sequence[int]) -> dict[str, Any]:
    """Plain Envoy: one route, one static round-robin cluster over the pods. The baseline."""
    route = {
        "virtual_hosts": [
            {
                "name": "pods",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "pods"}}],
            }
        ]
    }
    cluster = {
        "name": "pods",
        "type": "STATIC",
        "lb_policy": "ROUND_ROBIN",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "pods",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": p}
                                }
                            }
                        }
                        for p in pod_ports
                    ]
                }
            ],
        },
    }
    return {
        "admin": _admin(),
        "static_resources": {
            "listeners": [_http_listener("round-robin", port, route)],
            "clusters": [cluster],
        },
    }


def pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of process ``pid`` to ``cpus`` (a no-op where there are fewer CPUs)."""
    if not cpus <= os.sched_getaffinity(0):
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), cpus)


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


# Benchmarks of placing new users measure placing, not the services' bounds on new users.
UNBOUNDED_NEW_USERS = NewUserLimits(
    max_bound_users=1_000_000_000, new_per_s=1_000_000.0, burst=10_000_000
)


# -- wrk ------------------------------------------------------------------------------------

# Sets the uid header of each request from a list (cycling), and prints the summary as JSON.
_WRK_SCRIPT = """
local uids = {}
for line in io.lines("%(uids)s") do uids[#uids + 1] = line end
local i = 0
request = function()
  i = i + 1
  if i > #uids then i = 1 end
  return wrk.format("GET", "/", {["%(header)s"] = uids[i]})
end
done = function(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "duration_us": %%d, "errors": %%d, "non_2xx": %%d,'
    .. ' "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
    summary.errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise FileNotFoundError("the data-path benchmark needs wrk: apt-get install -y wrk")
    return found


async def run_wrk(
    url: str,
    uids: Sequence[str],
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
    header: str = "x-uid",
    cpus: set[int] | None = None,
) -> dict[str, float]:
    """wrk against ``url`` for ``seconds``, each request with the next uid of ``uids``."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        uid_file = Path(tmp) / "uids.txt"
        uid_file.write_text("\n".join(uids) + "\n")
        script = Path(tmp) / "uids.lua"
        script.write_text(_WRK_SCRIPT % {"uids": uid_file, "header": header})
        process = await asyncio.create_subprocess_exec(
            wrk_binary(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "2s",
            "-s",
            str(script),
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout=seconds + 30)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
    for line in out.decode().splitlines():
        if line.startswith("WRK_JSON "):
            raw = json.loads(line.removeprefix("WRK_JSON "))
            return {
                "rps": raw["requests"] / (raw["duration_us"] / 1e6),
                "requests": raw["requests"],
                "errors": raw["errors"] + raw["non_2xx"],
                "p50_ms": raw["p50_us"] / 1000,
                "p90_ms": raw["p90_us"] / 1000,
                "p99_ms": raw["p99_us"] / 1000,
                "max_ms": raw["max_us"] / 1000,
            }
    raise RuntimeError(f"wrk printed no summary: {out.decode()} {err.decode()}")
