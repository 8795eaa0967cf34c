"""A flood of random uids through a real Envoy stays within the service's bound on new users.

50,000 requests, each of a uid never seen before, sent by wrk as fast as this machine allows,
while the users bound before the flood keep being asked for. Past ``max_bound_users`` nobody
more is bound: Redis, the control plane and Envoy stay within what that bound costs, and the
bound users are served on their pods throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as redis

from controlplane.domain import ServiceKey
from controlplane.runtime.stack import NAMESPACE, SERVICE, LocalStack, StackConfig
from controlplane.store import KeySpace
from tests.e2e.conftest import SERVICE_PATH, Client
from tests.support.waiting import eventually

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.flood,  # in the suite; `-m "not flood"` leaves it out
    pytest.mark.asyncio(loop_scope="module"),
]

FLOOD = 50_000
BOUND_USERS = 50
MAX_BOUND_USERS = 500  # the bound users, the demo's probe, and room for 449 newcomers
NEW_PER_S = 200.0
# What the bound lets the flood add at most, generously: ~250 bytes of Redis and ~1 KB of
# Envoy heap per binding, a few KB of control-plane memory per routed user; plus room for
# what serving 50,000 requests costs by itself (buffers, connections, allocator slack).
# 50,000 bindings would take ~12 MB of Redis and ~50 MB of Envoy heap.
REDIS_BYTES_PER_USER, ENVOY_BYTES_PER_USER, CONTROLPLANE_BYTES_PER_USER = 1_024, 4_096, 16_384
REDIS_SLACK, ENVOY_SLACK, CONTROLPLANE_SLACK = 1 << 20, 12 << 20, 24 << 20
FLOOD_TIMEOUT_S = 120

# Each request carries a uid nobody sent before. A thread stops after its share, and says so
# with a file: wrk itself runs for its whole -d and is interrupted once every thread is done.
WRK_SCRIPT = """
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  share, done_dir, sent, ok, other = tonumber(args[1]), args[2], 0, 0, 0
end
function request()
  sent = sent + 1
  return wrk.format("GET", "/", {["x-uid"] = "flood-" .. id .. "-" .. sent})
end
function response(status)
  if status == 200 then ok = ok + 1 else other = other + 1 end
  if ok + other == share then
    io.open(done_dir .. "/" .. id, "w"):close()
    wrk.thread:stop()
  end
end
function done(summary)
  local ok, other = 0, 0
  for _, thread in ipairs(threads) do
    ok, other = ok + thread:get("ok"), other + thread:get("other")
  end
  io.write(string.format("FLOOD %d %d %d\\n", ok, other,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout))
end
"""


@dataclass
class Memory:
    redis_bindings: int
    redis_keys: int
    redis_used: int
    controlplane_rss: int
    envoy_heap: int


@dataclass
class Flood:
    ok: int
    other: int
    socket_errors: int
    seconds: float


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[LocalStack]:
    if shutil.which("wrk") is None:
        pytest.skip("the flood test sends with wrk: apt-get install -y wrk")
    stack = await LocalStack(StackConfig(pods=4)).start()
    yield stack
    await stack.stop()


async def measure(stack: LocalStack, store: redis.Redis) -> Memory:
    assert stack.envoy is not None
    assert stack.controlplane is not None
    assert stack.controlplane.process is not None
    keys = KeySpace().of(ServiceKey(NAMESPACE, SERVICE))
    status = await asyncio.to_thread(
        Path(f"/proc/{stack.controlplane.process.pid}/status").read_text
    )
    rss = re.search(r"VmRSS:\s+(\d+)", status)
    assert rss is not None
    return Memory(
        redis_bindings=await store.hlen(keys.bindings),
        redis_keys=await store.dbsize(),
        redis_used=(await store.info("memory"))["used_memory"],
        controlplane_rss=int(rss[1]) * 1024,
        envoy_heap=int(json.loads(await stack.envoy.get("/memory"))["allocated"]),
    )


async def flood(url: str, requests: int, threads: int = 2) -> Flood:
    """``requests`` requests of new uids through ``url``, as fast as wrk sends them."""
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="flood-") as tmp:
        script, done = Path(tmp) / "flood.lua", Path(tmp) / "done"
        script.write_text(WRK_SCRIPT)
        done.mkdir()
        started = loop.time()
        wrk = await asyncio.create_subprocess_exec(
            "wrk", f"-t{threads}", "-c32", f"-d{FLOOD_TIMEOUT_S}s", "--timeout", "5s",
            "-s", str(script), url, "--", str(requests // threads), str(done),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

        async def finished() -> bool:
            return wrk.returncode is not None or len(list(done.iterdir())) == threads

        try:
            await eventually(finished, "wrk's threads sent their share", FLOOD_TIMEOUT_S)
        finally:
            seconds = loop.time() - started
            with contextlib.suppress(ProcessLookupError):
                wrk.send_signal(signal.SIGINT)  # wrk stops, and prints its summary
            out, err = await asyncio.wait_for(wrk.communicate(), 30)
    line = next((x for x in out.decode().splitlines() if x.startswith("FLOOD ")), None)
    assert line is not None, f"wrk printed no summary: {out.decode()} {err.decode()}"
    ok, other, socket_errors = map(int, line.split()[1:])
    return Flood(ok, other, socket_errors, seconds)


async def keep_asking(client: Client, users: dict[str, int], stop: asyncio.Event) -> list[str]:
    """Ask for every bound user in turn until ``stop``; what went wrong, if anything."""
    problems: list[str] = []
    while not stop.is_set():
        for uid, pod in users.items():
            try:
                answer = await client.ask(uid)
            except (AssertionError, aiohttp.ClientError) as exc:
                problems.append(f"{uid}: {exc}")
                continue
            if answer["pod"] != pod:
                problems.append(f"{uid}: served by pod {answer['pod']}, bound to {pod}")
    return problems


@pytest.mark.timeout(300)
async def test_a_flood_of_new_uids_binds_no_more_than_the_bound_and_spares_bound_users(
    stack: LocalStack, client: Client
) -> None:
    service = (await client.admin("GET", "/api/v1/services"))[0]
    users = {f"regular-{i}": (await client.ask(f"regular-{i}"))["pod"] for i in range(BOUND_USERS)}
    limits = {"max_bound_users": MAX_BOUND_USERS, "new_per_s": NEW_PER_S, "burst": 200}
    await client.admin("PUT", SERVICE_PATH, {**service["settings"], "new_users": limits})
    assert stack.redis is not None
    async with redis.Redis.from_url(stack.redis.url, decode_responses=True) as store:
        before = await measure(stack, store)
        stop = asyncio.Event()
        asking = asyncio.create_task(keep_asking(client, users, stop))
        try:
            sent = await flood(stack.proxy_url + "/", FLOOD)
        finally:
            stop.set()
            problems = await asking
        after = await measure(stack, store)
    metrics = await client.session.get(stack.admin_url + "/metrics")
    refused = sum(
        float(line.rsplit(" ", 1)[1])
        for line in (await metrics.text()).splitlines()
        if line.startswith("stateful_route_new_users_refused_total{")
    )
    newcomers = MAX_BOUND_USERS - before.redis_bindings
    grown = {
        "redis used_memory": after.redis_used - before.redis_used,
        "control plane RSS": after.controlplane_rss - before.controlplane_rss,
        "envoy heap": after.envoy_heap - before.envoy_heap,
    }
    print(
        f"\nflood: {sent.ok + sent.other:,} new uids in {sent.seconds:.1f} s "
        f"({(sent.ok + sent.other) / sent.seconds:,.0f}/s): {sent.ok:,} answered 200, "
        f"{sent.other:,} otherwise, {sent.socket_errors} socket errors; "
        f"{refused:,.0f} refusals counted; bindings {before.redis_bindings} -> "
        f"{after.redis_bindings} (bound {MAX_BOUND_USERS}), redis keys {before.redis_keys} -> "
        f"{after.redis_keys}; grown: "
        + ", ".join(f"{name} {bytes_ / 2**20:+.1f} MiB" for name, bytes_ in grown.items())
    )

    assert sent.ok + sent.other >= FLOOD
    assert problems == []
    assert after.redis_bindings == MAX_BOUND_USERS
    assert after.redis_keys <= before.redis_keys + 1  # the token bucket at most
    assert refused >= FLOOD - newcomers - sent.other
    assert grown["redis used_memory"] <= newcomers * REDIS_BYTES_PER_USER + REDIS_SLACK
    assert grown["envoy heap"] <= newcomers * ENVOY_BYTES_PER_USER + ENVOY_SLACK
    assert grown["control plane RSS"] <= (
        newcomers * CONTROLPLANE_BYTES_PER_USER + CONTROLPLANE_SLACK
    )
