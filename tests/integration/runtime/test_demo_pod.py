"""The demo pod counts each user's requests, so a moved user shows as a reset counter."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from controlplane.runtime.demo_pod import DemoPod


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
