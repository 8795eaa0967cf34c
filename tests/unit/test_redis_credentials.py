"""Credentials and TLS reach the connections of every topology; secrets show nowhere.

A single server's ACL and TLS run against real servers (tests/integration/security); here,
without a server, what the Cluster and Sentinel clients are built with.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelManagedSSLConnection

from controlplane.store import connect
from controlplane.store.config import RedisSettings

SECRETS = {"password": SecretStr("data-n0de-secret"), "sentinel_password": SecretStr("s3ntinel")}


def credentials(kwargs: dict[str, Any]) -> tuple[str, ...]:
    return tuple(kwargs["credential_provider"].get_credentials())


async def test_cluster_nodes_get_the_acl_user_and_tls() -> None:
    client = connect(
        RedisSettings(
            cluster_nodes=["10.0.0.1:7000"],
            username="stateful-route",
            password=SECRETS["password"],
            tls=True,
        )
    )
    assert isinstance(client, RedisCluster)
    try:
        kwargs = client.nodes_manager.connection_kwargs
        assert credentials(kwargs) == ("stateful-route", "data-n0de-secret")
        assert kwargs["connection_class"] is SSLConnection
        assert kwargs["ssl_cert_reqs"] == "required"
        assert kwargs["ssl_check_hostname"] is True
        assert "data-n0de-secret" not in repr(kwargs)
    finally:
        await client.aclose()


async def test_sentinels_and_their_primary_get_credentials_of_their_own_and_tls() -> None:
    client = connect(
        RedisSettings(
            sentinels=["10.0.0.1:26379"],
            sentinel_master="mymaster",
            username="stateful-route",
            sentinel_username="watcher",
            tls=True,
            **SECRETS,
        )
    )
    assert isinstance(client, Redis)
    try:
        primary = client.connection_pool
        assert primary.connection_class is SentinelManagedSSLConnection
        assert credentials(primary.connection_kwargs) == ("stateful-route", "data-n0de-secret")
        [sentinel] = client.sentinel_manager.sentinels
        watched = sentinel.connection_pool
        assert watched.connection_class is SSLConnection
        assert credentials(watched.connection_kwargs) == ("watcher", "s3ntinel")
        for secret in SECRETS.values():
            assert secret.get_secret_value() not in repr(client)
    finally:
        await client.aclose()


async def test_a_password_alone_authenticates_as_the_default_user() -> None:
    client = connect(RedisSettings(password=SecretStr("only-a-password")))
    try:
        assert credentials(client.connection_pool.connection_kwargs) == ("only-a-password",)
    finally:
        await client.aclose()
