"""Bad input is a typed InvalidInput (or NotFound) and leaves Redis exactly as it was."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from controlplane.domain import Pod, RouteRequest, ServiceKey, parse
from controlplane.errors import InvalidInput, StatefulRouteError, UnknownPod
from tests.support.redis_dump import redis_dump

from .conftest import KEY, NS, SVC, MakeService

TOO_LONG = "x" * 257


@pytest.mark.parametrize(
    "fields",
    [
        {"namespace": "", "service": SVC, "uid": "alice"},
        {"namespace": TOO_LONG, "service": SVC, "uid": "alice"},
        {"namespace": NS, "service": "", "uid": "alice"},
        {"namespace": NS, "service": TOO_LONG, "uid": "alice"},
        {"namespace": NS, "service": SVC, "uid": ""},
        {"namespace": NS, "service": SVC, "uid": TOO_LONG},
        {"namespace": NS, "service": SVC, "uid": "ali\r\nce"},
        {"namespace": NS, "service": SVC, "uid": "tab\there"},
        {"namespace": "a{b}", "service": SVC, "uid": "alice"},
        {"namespace": NS, "service": SVC, "uid": "alice", "strategy": "random"},
    ],
)
async def test_bad_route_requests_are_invalid_input_and_write_nothing(
    make_service: MakeService, redis: Redis, fields: dict[str, str]
) -> None:
    await make_service()
    before = await redis_dump(redis)
    with pytest.raises(InvalidInput):
        parse(RouteRequest, fields)
    assert await redis_dump(redis) == before


@pytest.mark.parametrize(
    "fields",
    [
        {"index": -1, "host": "127.0.0.1", "port": 80},
        {"index": 0, "host": "127.0.0.1", "port": 80, "weight": 0},
        {"index": 0, "host": "127.0.0.1", "port": 80, "weight": -3},
        {"index": 0, "host": "bad host\r\n", "port": 80},
        {"index": 0, "host": "127.0.0.1", "port": 0},
        {"index": "0", "host": "127.0.0.1", "port": 80},
    ],
)
def test_bad_pods_are_invalid_input(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        parse(Pod, fields)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda m: m.migrate_user(KEY, "alice", -1), InvalidInput),
        (lambda m: m.migrate_user(KEY, "alice", 7), UnknownPod),
        (lambda m: m.migrate_user(KEY, "al\nice", 1), InvalidInput),
        (lambda m: m.handle_pod_failure(KEY, -2), InvalidInput),
        (lambda m: m.handle_pod_failure(KEY, 4), UnknownPod),
        (lambda m: m.drain_pod(ServiceKey.of(NS, ""), 0), InvalidInput),
        (lambda m: m.recover_pod(ServiceKey.of(TOO_LONG, SVC), 0), InvalidInput),
        (lambda m: m.get_binding(KEY, "x" * 300), InvalidInput),
    ],
)
async def test_bad_manager_calls_raise_typed_errors_and_write_nothing(
    make_service: MakeService,
    redis: Redis,
    call,
    error,  # type: ignore[no-untyped-def]
) -> None:
    manager = await make_service()
    await manager.route_request(RouteRequest(namespace=NS, service=SVC, uid="alice"))
    before = await redis_dump(redis)
    with pytest.raises(error) as raised:
        await call(manager)
    assert isinstance(raised.value, StatefulRouteError)
    assert await redis_dump(redis) == before
