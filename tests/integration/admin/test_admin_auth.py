"""The token rules: mutations need the bearer token, reads are open unless protected."""

from __future__ import annotations

from typing import Any

import pytest
from admin_support import (
    AUTH,
    BASE,
    NAMESPACE,
    SERVICE,
    TOKEN,
    Client,
    expect,
    given_service,
)
from aiohttp import ClientSession
from pydantic import SecretStr, ValidationError
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from controlplane.admin import Access, AdminSettings, create_admin_app
from controlplane.admin.routes import OPERATIONS, Operation
from controlplane.manager import StatefulRouteManager
from tests.support.redis_dump import redis_dump

EXAMPLE = {"namespace": NAMESPACE, "service": SERVICE, "index": "0", "uid": "alice"}


def concrete(op: Operation) -> str:
    return op.path.format(**EXAMPLE)


def ops(access: Access) -> list[Any]:
    return [
        pytest.param(op, id=f"{op.method} {op.path}") for op in OPERATIONS if op.access is access
    ]


@pytest.fixture
async def protected_reads(aiohttp_client: AiohttpClient, manager: StatefulRouteManager) -> Client:
    """A server that protects reads too; the client sends no token."""
    settings = AdminSettings(token=SecretStr(TOKEN), protect_reads=True)
    return await aiohttp_client(create_admin_app(manager, settings))


@pytest.fixture
async def tokenless(aiohttp_client: AiohttpClient, manager: StatefulRouteManager) -> Client:
    """A server configured without a token; the client sends none."""
    return await aiohttp_client(create_admin_app(manager, AdminSettings()))


@pytest.mark.parametrize("op", ops(Access.WRITE))
async def test_every_mutation_without_a_token_is_401_with_a_bearer_challenge(
    anonymous: ClientSession, manager: StatefulRouteManager, redis: Redis, op: Operation
) -> None:
    await given_service(manager)
    before = await redis_dump(redis)
    response = await anonymous.request(op.method, concrete(op), json={})
    await expect(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="stateful-route"'
    assert await redis_dump(redis) == before


@pytest.mark.parametrize(
    "header", [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ", f"Basic {TOKEN}", TOKEN,
               "Bearer t\u00f6ken"],
)  # fmt: skip
async def test_a_wrong_or_malformed_token_is_401(
    anonymous: ClientSession, manager: StatefulRouteManager, header: str
) -> None:
    await given_service(manager)
    response = await anonymous.post(f"{BASE}/pods/0/drain", headers={"Authorization": header})
    await expect(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


async def test_a_wrong_bearer_token_is_told_it_is_invalid(
    anonymous: ClientSession, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    response = await anonymous.delete(BASE, headers={"Authorization": "Bearer nope"})
    await expect(response, 401)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_the_scheme_is_case_insensitive(
    anonymous: ClientSession, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    response = await anonymous.post(
        f"{BASE}/pods/0/drain", headers={"Authorization": f"bearer {TOKEN}"}
    )
    await expect(response, 200)


@pytest.mark.parametrize("op", ops(Access.READ) + ops(Access.USER_READ) + ops(Access.OPEN))
async def test_reads_need_no_token_by_default(
    anonymous: ClientSession, manager: StatefulRouteManager, op: Operation
) -> None:
    await given_service(manager)
    await expect(await anonymous.put(f"{BASE}/users/alice", json={"pod": 0}, headers=AUTH), 200)
    response = await anonymous.request(op.method, concrete(op))
    assert response.status == 200


@pytest.mark.parametrize("op", ops(Access.READ) + ops(Access.USER_READ))
async def test_protected_reads_need_the_token(
    protected_reads: Client, manager: StatefulRouteManager, op: Operation
) -> None:
    await given_service(manager)
    await expect(await protected_reads.request(op.method, concrete(op)), 401, "unauthorized")


async def test_health_and_the_api_description_stay_open_when_reads_are_protected(
    protected_reads: Client,
) -> None:
    for path in ("/healthz", "/openapi.json", "/docs"):
        assert (await protected_reads.get(path)).status == 200, path


async def test_without_a_configured_token_mutations_are_open(
    tokenless: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager)
    await expect(await tokenless.post(f"{BASE}/pods/0/drain"), 200)


def test_settings_refuse_a_token_short_enough_to_guess() -> None:
    with pytest.raises(ValidationError):
        AdminSettings(token=SecretStr("short"))


# -- the read token and reads that name users ----------------------------------------------

READ_TOKEN = "read-only-token-0123456789abcdef"


@pytest.fixture
async def user_reads_protected(
    aiohttp_client: AiohttpClient, manager: StatefulRouteManager
) -> Client:
    """A server as one listening beyond loopback sets it up: user reads need a token."""
    settings = AdminSettings(token=SecretStr(TOKEN), read_token=SecretStr(READ_TOKEN))
    return await aiohttp_client(create_admin_app(manager, settings.for_listener("0.0.0.0")))


@pytest.mark.parametrize("op", ops(Access.USER_READ))
async def test_reads_that_name_users_need_the_read_token_or_the_token_beyond_loopback(
    user_reads_protected: Client, manager: StatefulRouteManager, op: Operation
) -> None:
    await given_service(manager)
    await expect(
        await user_reads_protected.put(f"{BASE}/users/alice", json={"pod": 0}, headers=AUTH), 200
    )
    await expect(await user_reads_protected.request(op.method, concrete(op)), 401, "unauthorized")
    for token in (READ_TOKEN, TOKEN):
        headers = {"Authorization": f"Bearer {token}"}
        assert (
            await user_reads_protected.request(op.method, concrete(op), headers=headers)
        ).status == 200


@pytest.mark.parametrize("op", ops(Access.READ))
async def test_reads_that_name_no_user_stay_open_beyond_loopback(
    user_reads_protected: Client, manager: StatefulRouteManager, op: Operation
) -> None:
    await given_service(manager)
    assert (await user_reads_protected.request(op.method, concrete(op))).status == 200


@pytest.mark.parametrize("op", ops(Access.WRITE))
async def test_the_read_token_writes_nothing(
    user_reads_protected: Client, manager: StatefulRouteManager, redis: Redis, op: Operation
) -> None:
    await given_service(manager)
    before = await redis_dump(redis)
    headers = {"Authorization": f"Bearer {READ_TOKEN}"}
    response = await user_reads_protected.request(op.method, concrete(op), json={}, headers=headers)
    await expect(response, 401, "unauthorized")
    assert await redis_dump(redis) == before


@pytest.mark.parametrize(
    ("host", "protected"),
    [("127.0.0.1", False), ("::1", False), ("localhost", False), ("0.0.0.0", True),
     ("10.1.2.3", True), ("controlplane.internal", True)],
)  # fmt: skip
def test_user_reads_are_protected_by_default_only_beyond_loopback(
    host: str, protected: bool
) -> None:
    assert AdminSettings().for_listener(host).protect_user_reads is protected
    assert AdminSettings(protect_user_reads=False).for_listener(host).protect_user_reads is False


async def test_no_token_sent_or_configured_reaches_the_logs(
    user_reads_protected: Client, manager: StatefulRouteManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    await given_service(manager)
    for token in (TOKEN, READ_TOKEN, "a-guess-0123456789abcdef"):
        headers = {"Authorization": f"Bearer {token}"}
        await user_reads_protected.get(f"{BASE}/users/alice", headers=headers)
        await user_reads_protected.post(f"{BASE}/pods/0/drain", headers=headers)
    assert caplog.records  # the drain was logged: there are lines to look in
    for secret in (TOKEN, READ_TOKEN, "a-guess-0123456789abcdef"):
        assert secret not in caplog.text
