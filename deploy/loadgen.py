"""A bounded load generator for the compose stack: N users x M requests through Envoy, then exit.

Each user sends its requests one after another (users run concurrently); the demo pods answer
``{"pod": i, "uid": ..., "count": n}``, so a user whose pod changes, or whose count skips,
has lost its state. Exits 0 when every request succeeded and no user changed pod, else 1.

    python deploy/loadgen.py --url http://127.0.0.1:10000/ --users 100 --requests 10
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp


@dataclass
class Tally:
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    moved: list[str] = field(default_factory=list)  # users whose pod or count broke
    users_per_pod: Counter[int] = field(default_factory=Counter)


async def wait_until_routing(
    session: aiohttp.ClientSession, url: str, header: str, wait_s: float
) -> None:
    """Until one request through Envoy reaches a pod (routes arrive after Envoy is up)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            async with session.get(url, headers={header: "loadgen-probe"}) as response:
                if response.status == 200:
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"loadgen: nothing routed through {url} within {wait_s}s")
        await asyncio.sleep(0.5)


async def user(
    session: aiohttp.ClientSession, url: str, header: str, uid: str, requests: int, tally: Tally
) -> None:
    pods: set[int] = set()
    counts: list[int] = []
    for _ in range(requests):
        tally.requests += 1
        try:
            async with session.get(url, headers={header: uid}) as response:
                if response.status != 200:
                    tally.errors[f"HTTP {response.status}"] += 1
                    continue
                answer = await response.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.errors[type(exc).__name__] += 1
            continue
        pods.add(answer["pod"])
        counts.append(answer["count"])
    # Consecutive counts on one pod: the user's state stayed where it was.
    if len(pods) > 1 or any(b != a + 1 for a, b in itertools.pairwise(counts)):
        tally.moved.append(uid)
    for pod in pods:
        tally.users_per_pod[pod] += 1


async def run(args: argparse.Namespace) -> int:
    tally = Tally()
    run_id = args.prefix or uuid.uuid4().hex[:8]
    uids = [f"{run_id}-user-{i}" for i in range(args.users)]
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await wait_until_routing(session, args.url, args.uid_header, args.wait_s)
        limit = asyncio.Semaphore(args.concurrency)

        async def one(uid: str) -> None:
            async with limit:
                await user(session, args.url, args.uid_header, uid, args.requests, tally)

        started = time.perf_counter()
        await asyncio.gather(*(one(uid) for uid in uids))
        elapsed = time.perf_counter() - started
    failed = sum(tally.errors.values())
    spread = " ".join(f"pod{pod}={n}" for pod, n in sorted(tally.users_per_pod.items()))
    print(
        f"loadgen users={args.users} requests={tally.requests} failed={failed} "
        f"moved_users={len(tally.moved)} seconds={elapsed:.2f} "
        f"requests_per_s={tally.requests / elapsed:.0f} users_per_pod: {spread}"
    )
    for error, count in tally.errors.most_common():
        print(f"  error {error}: {count}")
    if tally.moved:
        print(f"  moved (first 10): {' '.join(tally.moved[:10])}")
    return 0 if not failed and not tally.moved else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:10000/", help="Envoy's proxy URL")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--requests", type=int, default=10, help="requests per user")
    parser.add_argument("--concurrency", type=int, default=50, help="users in flight at once")
    parser.add_argument("--uid-header", default="x-uid")
    parser.add_argument("--prefix", help="uid prefix (default: a random one per run)")
    parser.add_argument("--wait-s", type=float, default=60.0, help="wait this long for routes")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="per request")
    args = parser.parse_args(argv)
    if args.users < 1 or args.requests < 1 or args.concurrency < 1:
        parser.error("--users, --requests and --concurrency must be at least 1")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
