"""A demo stateful pod: counts each user's requests in memory.

A stickiness violation shows as a counter that starts again at 1 on another pod. It answers
``{"pod": <index>, "uid": <uid>, "count": <n>}`` on every path but /health, and can report its
load to the control plane's admin API.

    python -m controlplane.runtime.demo_pod --index 0 --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections import Counter

import aiohttp
from aiohttp import web

from controlplane.tls import client_context

UID_HEADER = "x-uid"
# The header the demo echoes as "epoch" when a request carries it (the name docs/operations.md
# suggests for a service's failover.epoch_header).
EPOCH_HEADER = "x-stateful-route-epoch"
# Where the pod finds the admin token by default: the environment, not the command line that
# `ps` and `docker inspect` show.
TOKEN_ENV = "STATEFUL_ROUTE_TOKEN"


class DemoPod:
    def __init__(
        self, index: int, uid_header: str = UID_HEADER, epoch_header: str = EPOCH_HEADER
    ) -> None:
        self.index = index
        self.uid_header = uid_header
        self.epoch_header = epoch_header
        self.counts: Counter[str] = Counter()
        self.active = 0
        self.healthy = True

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_route("*", "/{tail:.*}", self.serve)
        return app

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"pod": self.index, "ok": self.healthy}, status=200 if self.healthy else 503
        )

    async def serve(self, request: web.Request) -> web.Response:
        uid = request.headers.get(self.uid_header, "")
        self.active += 1
        try:
            self.counts[uid] += 1
            body: dict[str, object] = {"pod": self.index, "uid": uid, "count": self.counts[uid]}
            epoch = request.headers.get(self.epoch_header)
            if epoch is not None:
                body["epoch"] = int(epoch) if epoch.isdigit() else epoch
            return web.json_response(body)
        finally:
            self.active -= 1


async def report_load(
    pod: DemoPod,
    admin: str,
    namespace: str,
    service: str,
    token: str | None,
    every_s: float,
    ca_file: str | None = None,
) -> None:
    """Tell the control plane how busy this pod is (feeds least-connections and weights)."""
    url = f"{admin.rstrip('/')}/api/v1/services/{namespace}/{service}/pods/{pod.index}/load"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(ssl=client_context(ca_file) if ca_file else True)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        while True:
            body = {"active_requests": pod.active, "active_connections": pod.active}
            try:
                async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=2)):
                    pass
            except (aiohttp.ClientError, TimeoutError):
                pass  # the control plane may be restarting: report again next round
            await asyncio.sleep(every_s)


async def serve(
    index: int,
    host: str,
    port: int,
    report_to: str | None,
    token: str | None,
    ca_file: str | None = None,
) -> None:
    pod = DemoPod(index)
    runner = web.AppRunner(pod.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        if report_to:
            await report_load(pod, report_to, "demo", "echo", token, 2.0, ca_file)
        else:
            await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="a demo stateful pod")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--report-to", help="admin API base URL to report load to")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"admin API token (default: ${TOKEN_ENV})",
    )
    parser.add_argument("--ca-file", help="the CA of an https admin API's certificate")
    args = parser.parse_args()
    asyncio.run(serve(args.index, args.host, args.port, args.report_to, args.token, args.ca_file))


if __name__ == "__main__":
    main()
