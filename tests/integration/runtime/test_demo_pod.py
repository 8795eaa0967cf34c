"""The demo pod counts each user's requests, so a moved user shows as a reset counter."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from controlplane.runtime.demo_pod import TOKEN_ENV, DemoPod
from controlplane.runtime.ports import free_port


async def test_each_user_has_its_own_counter_and_health_can_fail() -> None:
    pod = DemoPod(index=0)
    async with TestClient(TestServer(pod.app())) as client:
        answers = [
            await (await client.get("/", headers={"x-uid": "alice"})).json() for _ in range(3)
        ]
        bob = await (await client.get("/any/path", headers={"x-uid": "bob"})).json()
        assert [a["count"] for a in answers] == [1, 2, 3]
        assert answers[0] == {"pod": 0, "uid": "alice", "count": 1}
        assert bob == {"pod": 0, "uid": "bob", "count": 1}
        assert (await client.get("/health")).status == 200
        pod.healthy = False
        assert (await client.get("/health")).status == 503


async def test_the_pod_echoes_the_epoch_it_was_sent() -> None:
    async with TestClient(TestServer(DemoPod(index=0).app())) as client:
        sent = await client.get("/", headers={"x-uid": "alice", "x-stateful-route-epoch": "7"})
        plain = await client.get("/", headers={"x-uid": "alice"})
        assert (await sent.json())["epoch"] == 7
        assert "epoch" not in await plain.json()


async def test_the_pod_reports_its_load_with_the_token_from_its_environment() -> None:
    reported: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def load(request: web.Request) -> web.Response:
        if not reported.done():
            reported.set_result(request.headers.get("Authorization", ""))
        return web.json_response({})

    admin = web.Application()
    admin.router.add_post("/api/v1/services/demo/echo/pods/0/load", load)
    token = "pod-env-token-0123456789"
    async with TestServer(admin) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controlplane.runtime.demo_pod", "--index", "0",
            "--port", str(free_port()), "--report-to", str(server.make_url("/")),
            env={**os.environ, TOKEN_ENV: token},
        )  # fmt: skip
        try:
            # Not on the command line (`ps`, `docker inspect`), yet the reports carry it.
            cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()  # noqa: ASYNC240
            assert token.encode() not in cmdline
            assert await asyncio.wait_for(reported, timeout=10) == f"Bearer {token}"
        finally:
            process.kill()
            await process.wait()
