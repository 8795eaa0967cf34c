"""REST discovery throughput on one core: cached CDS answers and the 304 path.

The control plane runs in a subprocess pinned to CPU 0 (200 services x 10 pods, long-poll off
so an up-to-date request gets its 304 at once); the load generator is pinned to another CPU and
keeps N keep-alive connections busy. Each case runs with a small body and with a real Envoy
node (captured from Envoy 1.40 at start-up, ~77 KB). Baseline in the same run: serializing the
200 clusters per request with betterproto2, as a server without the per-version cache would.

    python -m bench.xds_rest_throughput [--seconds 5] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from bench._common import Figure, Scenario
from controlplane.domain import ServiceState
from controlplane.runtime.envoy import EnvoyProcess, load_bootstrap
from controlplane.runtime.ports import free_port
from controlplane.xds import resources as res
from controlplane.xds.config import XdsSettings
from tests.support.state import MemoryStateSource, service_state
from tests.support.xds_stack import XdsStack

ENVOY_DIR = Path(__file__).parents[1] / "envoy"
SERVICES, PODS = 200, 10


def states() -> list[ServiceState]:
    return [
        service_state("bench", f"svc-{i}", [20000 + j for j in range(PODS)])
        for i in range(SERVICES)
    ]


async def serve(port_file: Path) -> None:
    os.sched_setaffinity(0, {0})
    stack = await XdsStack(MemoryStateSource(states()), XdsSettings(long_poll_hold_s=0)).start()
    await asyncio.to_thread(port_file.write_text, str(stack.rest_port))
    await asyncio.Event().wait()  # until the benchmark terminates this process


async def capture_envoy_node() -> dict[str, Any]:
    """The node Envoy sends in its REST requests (with its full extension list)."""
    captured: dict[str, Any] = {}

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        captured.setdefault("node", body["node"])
        empty = {"version_info": "0", "type_url": body.get("type_url", ""), "resources": []}
        return web.json_response(empty)

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with EnvoyProcess(load_bootstrap(ENVOY_DIR / "rest.yaml", xds_port=port)):
        pass
    await runner.cleanup()
    node: dict[str, Any] = captured["node"]
    return node


def http_request(body: bytes) -> bytes:
    return (
        b"POST /v3/discovery:clusters HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def hammer(
    port: int, node: dict[str, Any], versions: list[str], seconds: float, connections: int
) -> tuple[float, int, set[int]]:
    """Each connection is its own node and cycles through ``versions`` in its requests.

    A REST client repeating a request after a 200 is NACKing it (and gets held), so a client
    that keeps missing the current version alternates between two stale versions.
    """
    done = 0
    statuses: set[int] = set()
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        nonlocal done
        me = {**node, "id": f"{node['id']}-{index}"}
        requests = [
            http_request(json.dumps({"node": me, "version_info": v}).encode()) for v in versions
        ]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = 0
        while time.perf_counter() < deadline:
            writer.write(requests[sent % len(requests)])
            sent += 1
            head = await reader.readuntil(b"\r\n\r\n")
            statuses.add(int(head[9:12]))
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            done += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(connections)))
    size = len(json.dumps({"node": node, "version_info": versions[0]})) + 100
    return done / (time.perf_counter() - started), size, statuses


def baseline_renders_per_second() -> float:
    """Responses/s if every CDS answer serialized its 200 clusters (no cache)."""
    source = res.config_source(res.SourceKind.ADS)
    clusters = [res.build_cluster(s.service, source) for s in states()]
    started = time.perf_counter()
    json.dumps([{"@type": res.CLUSTER, **c.to_dict()} for c in clusters])
    return 1 / (time.perf_counter() - started)


async def run_cases(
    port: int, node: dict[str, Any], args: argparse.Namespace, scenario: Scenario
) -> None:
    small_node = {"id": "bench", "cluster": "default"}
    current = json.loads(await _post(port, json.dumps({"node": small_node}).encode()))
    print(f"REST throughput: server on 1 core, {SERVICES} clusters, {args.connections} connections")
    baseline = baseline_renders_per_second()
    print(f"{'baseline: serializing per request':<48} {baseline:8.2f} responses/s")
    cases = (
        ("cached CDS (200 clusters)", ["stale-a", "stale-b"]),
        ("304 (version current)", [current["version_info"]]),
    )
    for label, versions in cases:
        for node_label, who in (("small body", small_node), ("Envoy node", node)):
            rate, size, statuses = await hammer(port, who, versions, args.seconds, args.connections)
            print(
                f"{label:<26} {node_label:<10} {size:>6} B  {rate:8.0f} responses/s  "
                f"status {sorted(statuses)}  ({rate / baseline:,.0f}x baseline)"
            )
            scenario.add(
                Figure(
                    f"{label}, {node_label} ({size:,} B request)",
                    rate,
                    "responses/s",
                    "serializing the 200 clusters per request",
                    baseline,
                    note=f"HTTP status {sorted(statuses)}",
                )
            )


def wait_for_port(port_file: Path, server: subprocess.Popen[bytes]) -> int:
    while not (port_file.exists() and port_file.read_text()):
        if server.poll() is not None:
            raise RuntimeError("the benchmark server exited")
        time.sleep(0.05)
    return int(port_file.read_text())


def run(seconds: float, connections: int) -> Scenario:
    """Blocking (it runs its own event loops): call it from a thread inside another loop."""
    args = argparse.Namespace(seconds=seconds, connections=connections)
    scenario = Scenario(
        "discovery_rate",
        f"REST discovery serving rate: server on 1 core, {SERVICES} clusters",
        f"python -m bench.xds_rest_throughput --seconds {seconds:g} --connections {connections}",
        params={"seconds": seconds, "connections": connections, "clusters": SERVICES},
    )
    node = asyncio.run(capture_envoy_node())
    os.sched_setaffinity(0, {1})  # this thread: the load generator, off the server's CPU
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        command = [sys.executable, "-m", "bench.xds_rest_throughput", "--serve", str(port_file)]
        server = subprocess.Popen(command)
        try:
            asyncio.run(run_cases(wait_for_port(port_file, server), node, args, scenario))
        finally:
            server.terminate()
            server.wait()
    return scenario


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(Path(args.serve)))
        return
    run(args.seconds, args.connections)


async def _post(port: int, body: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v3/discovery:clusters HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    data = await reader.read()
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1]


if __name__ == "__main__":
    main()
