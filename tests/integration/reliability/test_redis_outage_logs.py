"""What a short Redis restart logs: one WARNING, one INFO with its length, no traceback."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest

from controlplane.admin.models import PodSpec
from controlplane.domain import HealthCheckSettings, ServiceSettings
from controlplane.outage import RedisOutage, run_every
from controlplane.runtime.redis_server import RedisServer
from controlplane.server import Server
from controlplane.settings import ListenSettings, ServiceConfig, Settings, UpkeepSettings
from controlplane.store import connect
from controlplane.store.config import RedisSettings
from tests.support.waiting import eventually


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this test may kill and restart."""
    with RedisServer(appendonly=True) as server:
        yield server


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def messages(caplog: pytest.LogCaptureFixture, level: int, start: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == level and r.getMessage().startswith(start)
    ]


async def test_a_one_second_redis_restart_logs_one_warning_and_one_info_with_its_length(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    checks = HealthCheckSettings(interval_s=0.1, timeout_s=0.1)
    settings = Settings(
        redis=RedisSettings(url=own_redis.url),
        listen=ListenSettings(admin_port=0, xds_rest_port=0, xds_grpc_port=0),
        upkeep=UpkeepSettings(reconcile_every_s=0.1, last_seen_flush_s=0.1),
        services=[
            ServiceConfig(
                namespace="games",
                name="lobby",
                settings=ServiceSettings(health_check=checks),
                pods=[PodSpec(index=0, host="127.0.0.1", port=closed_port())],
            )
        ],
    )
    server = Server(settings)
    caplog.set_level(logging.INFO, logger="stateful_route")
    await server.start()
    try:
        await asyncio.sleep(0.3)  # the loops run: health rounds, reconcile
        own_redis.kill()
        await asyncio.sleep(1.0)  # the outage under test: its length is what INFO reports
        await asyncio.to_thread(own_redis.start)

        async def back() -> bool:
            return bool(messages(caplog, logging.INFO, "redis_back"))

        await eventually(back, "the word that Redis is back")
    finally:
        await server.stop()

    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    [warning] = messages(caplog, logging.WARNING, "redis_unreachable")
    assert "ConnectionError" in warning
    [back] = messages(caplog, logging.INFO, "redis_back")
    outage_s = float(back.split("outage_s=")[1])
    assert 0.9 <= outage_s <= 3.0


async def test_an_unexpected_error_in_an_upkeep_job_is_still_logged_with_its_traceback(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:
        raise ValueError("a bug")

    client = connect(own_redis.url)
    outage = RedisOutage(client.ping)
    task = asyncio.create_task(run_every(0.01, broken, "reconcile", outage))

    async def logged() -> bool:
        return any(r.levelno == logging.ERROR for r in caplog.records)

    await eventually(logged, "the job's error logged")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await client.aclose()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors
    assert all(r.exc_info and r.getMessage() == "upkeep_failed job=reconcile" for r in errors)
    assert not outage.unreachable
