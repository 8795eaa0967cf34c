"""Bad input is a 4xx JSON error, never a 500, and writes nothing to Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from admin_support import BASE, NAMESPACE, SERVICE, Client, expect, given_service
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from controlplane.admin import AdminSettings, create_admin_app
from controlplane.manager import StatefulRouteManager
from controlplane.runtime.ports import free_port
from controlplane.store import Store, connect
from tests.support.redis_dump import redis_dump


@pytest.fixture
async def outage(aiohttp_client: AiohttpClient) -> AsyncIterator[Client]:
    """An admin app whose Redis is a port nobody listens on."""
    store = Store(connect(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5))
    yield await aiohttp_client(create_admin_app(StatefulRouteManager(store), AdminSettings()))
    await store.close()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (b"[" * 2000 + b"]" * 2000, "invalid_json"),  # deeper than the parser recurses
        (b'{"pod": ' + b"9" * 5000 + b"}", "invalid_json"),  # over Python's int-parsing limit
        (b"", "invalid_json"),  # this operation needs a body
    ],
    ids=["truncated", "not-utf8", "too-deep", "huge-integer", "empty"],
)
async def test_a_body_that_is_not_json_is_400(
    api: Client, manager: StatefulRouteManager, redis: Redis, body: bytes, error: str
) -> None:
    await given_service(manager)
    before = await redis_dump(redis)
    response = await api.put(f"{BASE}/users/alice", data=body)
    await expect(response, 400, error)
    assert await redis_dump(redis) == before


async def test_json_that_is_not_an_object_is_422(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    for body in (b"[1, 2]", b'"pod"', b"3", b"null"):
        response = await api.put(f"{BASE}/users/alice", data=body)
        await expect(response, 422, "validation_error")


async def test_values_of_another_json_type_are_422_and_write_nothing(
    api: Client, manager: StatefulRouteManager, redis: Redis
) -> None:
    await given_service(manager)
    before = await redis_dump(redis)
    for body in ({"pod": True}, {"pod": "1"}, {"pod": 1.5}):
        await expect(await api.put(f"{BASE}/users/alice", json=body), 422, "validation_error")
    assert await redis_dump(redis) == before


async def test_a_whole_number_written_with_a_fraction_is_that_integer(
    api: Client, manager: StatefulRouteManager
) -> None:
    # JSON Schema, and so the OpenAPI document, counts 1.0 and 1e0 as the integer 1.
    await given_service(manager)
    for written in ("1.0", "1e0"):
        body = f'{{"pod": {written}}}'
        headers = {"Content-Type": "application/json"}
        moved = await expect(await api.put(f"{BASE}/users/alice", data=body, headers=headers), 200)
        assert moved["pod"] == 1


async def test_a_body_over_the_size_limit_is_413_and_writes_nothing(
    api: Client, manager: StatefulRouteManager, redis: Redis
) -> None:
    await given_service(manager)
    before = await redis_dump(redis)
    padding = "x" * 9000  # the fixture's limit is 8192 bytes
    body = {"namespace": NAMESPACE, "service": SERVICE, "uid": "alice", "pad": padding}
    await expect(await api.post("/api/v1/route", json=body), 413, "body_too_large")
    assert await redis_dump(redis) == before


@pytest.mark.parametrize("uid", ["ali%0D%0Ace", "alice%0A", "%0D", "a%20b", "%C3%A9", "x" * 300])
async def test_a_path_uid_with_cr_lf_or_other_invisible_characters_is_400_and_writes_nothing(
    api: Client, manager: StatefulRouteManager, redis: Redis, uid: str
) -> None:
    await given_service(manager)
    before = await redis_dump(redis)
    await expect(await api.put(f"{BASE}/users/{uid}", json={"pod": 0}), 400, "invalid_input")
    await expect(await api.get(f"{BASE}/users/{uid}"), 400, "invalid_input")
    await expect(await api.delete(f"{BASE}/users/{uid}"), 400, "invalid_input")
    assert await redis_dump(redis) == before


@pytest.mark.parametrize("uid", ["ali\r\nce", "alice\n", "\r", "a b", "é", "", "x" * 300])
async def test_a_routed_uid_with_cr_lf_or_other_invisible_characters_is_422_and_writes_nothing(
    api: Client, manager: StatefulRouteManager, redis: Redis, uid: str
) -> None:
    await given_service(manager)
    before = await redis_dump(redis)
    body = {"namespace": NAMESPACE, "service": SERVICE, "uid": uid}
    error = await expect(await api.post("/api/v1/route", json=body), 422, "validation_error")
    assert error["detail"][0]["loc"] == ["uid"]
    assert uid not in str(error) or not uid.strip()  # the bad value is not echoed back
    assert await redis_dump(redis) == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/services/" + "n" * 300 + "/lobby",
        "/api/v1/services/games/" + "s" * 300,
        "/api/v1/services/-games/lobby",
        "/api/v1/services/ga%24mes/lobby",
        "/api/v1/services/games/lo%0Dbby",
    ],
)
async def test_a_bad_namespace_or_service_name_is_400_and_writes_nothing(
    api: Client, redis: Redis, path: str
) -> None:
    await expect(await api.put(path), 400, "invalid_input")
    assert await redis_dump(redis) == {}


async def test_an_unknown_path_is_a_json_404(api: Client) -> None:
    await expect(await api.get("/api/v1/nothing-here"), 404, "not_found")


async def test_a_wrong_method_is_a_json_405_naming_the_allowed_ones(api: Client) -> None:
    response = await api.patch(f"{BASE}/pods")
    await expect(response, 405, "method_not_allowed")
    assert {"GET", "POST"} <= set(response.headers["Allow"].split(","))


async def test_a_redis_outage_is_503_store_unavailable(outage: Client) -> None:
    await expect(await outage.get("/api/v1/services"), 503, "store_unavailable")
    body = {"namespace": NAMESPACE, "service": SERVICE, "uid": "alice"}
    await expect(await outage.post("/api/v1/route", json=body), 503, "store_unavailable")


async def test_health_is_degraded_and_503_while_redis_is_unreachable(outage: Client) -> None:
    assert await expect(await outage.get("/healthz"), 503) == {
        "status": "degraded",
        "redis": False,
        "leader": True,  # a lone manager leads
    }


async def test_health_is_ok_while_redis_answers(api: Client) -> None:
    health = await expect(await api.get("/healthz"), 200)
    assert health == {"status": "ok", "redis": True, "leader": True}


async def test_metrics_still_answer_during_a_redis_outage(outage: Client) -> None:
    response = await outage.get("/metrics")
    assert response.status == 200
    assert "stateful_route_redis_errors_total 1.0" in await response.text()
