"""One client for any of the three Redis topologies: a single server, a Cluster, Sentinel.

The store above this module is the same for all three because every multi-key operation it
issues (script, transaction, pipeline) touches the keys of one service, i.e. one hash slot.
Credentials (ACL user and password) and TLS apply alike to each; a password reaches redis-py
only through a credential provider, asked for each new connection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeAlias

from pydantic import SecretStr
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import AuthenticationError, ConnectionError

from controlplane.errors import InvalidInput
from controlplane.store.config import RedisSettings, RedisTopology

RedisClient: TypeAlias = Redis | RedisCluster
"""What the store talks to; both expose the same command methods."""

_HEALTH_CHECK_INTERVAL_S = 10


def _reconnect_once() -> Retry:
    """A pooled connection opened before Redis restarted is a dead socket: its next command
    fails at once. Tried again on a new connection, that command succeeds instead of taking a
    request down the Redis-unreachable path. Only connection errors, once: a timeout may mean
    the command ran, and a Redis that is away fails the second try at once too."""
    return Retry(NoBackoff(), retries=1, supported_errors=(ConnectionError,))


def connect(
    target: str | RedisSettings, *, max_connections: int = 64, timeout_s: float = 5.0
) -> RedisClient:
    """A client for a Redis URL, or for whichever topology ``target`` settings choose."""
    settings = RedisSettings(url=target) if isinstance(target, str) else target
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }
    common |= _credentials(settings.username, settings.password, settings.password_file)
    common |= _tls(settings)
    # A single server's client takes TLS from its url's scheme; the others from ssl=True.
    ssl = {"ssl": True} if settings.uses_tls else {}
    match settings.topology:
        case RedisTopology.SINGLE:
            url = settings.url
            if settings.uses_tls and url.startswith("redis://"):
                url = "rediss://" + url.removeprefix("redis://")
            return _single(url, common, max_connections, timeout_s)
        case RedisTopology.CLUSTER:
            return _cluster(settings.cluster_nodes, common | ssl, max_connections)
        case RedisTopology.SENTINEL:
            assert settings.sentinel_master is not None  # the settings validate this
            pooling = {"max_connections": max_connections, "timeout": timeout_s}
            return _sentinel(settings, settings.sentinel_master, common | pooling | ssl)


class SecretCredentials(CredentialProvider):
    """A user's password for each new connection: from the settings, or read from a file then
    (so a rotated file is used without a restart). Its repr shows no secret."""

    def __init__(
        self, username: str | None, password: SecretStr | None, password_file: Path | None
    ) -> None:
        self._username = username
        self._password = password
        self._password_file = password_file

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        password = self.password()
        return (password,) if self._username is None else (self._username, password)

    def password(self) -> str:
        if self._password_file is None:
            return "" if self._password is None else self._password.get_secret_value()
        try:
            return self._password_file.read_text().rstrip("\r\n")
        except OSError as exc:  # a RedisError: the store reports Redis as unavailable
            raise AuthenticationError(
                f"cannot read the Redis password file {self._password_file}: {exc.strerror}"
            ) from None

    def __repr__(self) -> str:
        return f"SecretCredentials(username={self._username!r})"


def _credentials(
    username: str | None, password: SecretStr | None, password_file: Path | None
) -> dict[str, Any]:
    if username is None and password is None and password_file is None:
        return {}
    provider = SecretCredentials(username, password, password_file)
    try:
        provider.password()  # a missing or unreadable file fails at start, not at first use
    except AuthenticationError as exc:
        raise InvalidInput(str(exc)) from None
    return {"credential_provider": provider}


def _tls(settings: RedisSettings) -> dict[str, Any]:
    """redis-py's options of a TLS connection: which CA, which client certificate."""
    if not settings.uses_tls:
        return {}
    files = {
        "ssl_ca_certs": settings.tls_ca_file,
        "ssl_certfile": settings.tls_cert_file,
        "ssl_keyfile": settings.tls_key_file,
    }
    return {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": settings.tls_check_hostname,
        **{name: str(path) for name, path in files.items() if path is not None},
    }


def _single(url: str, common: dict[str, Any], max_connections: int, timeout_s: float) -> Redis:
    # Callers wait for a free connection instead of failing when all are busy.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        health_check_interval=_HEALTH_CHECK_INTERVAL_S,
        retry=_reconnect_once(),
        **common,
    )
    return Redis.from_pool(pool)  # the client owns the pool and closes it


def _cluster(seeds: list[str], common: dict[str, Any], max_connections: int) -> RedisCluster:
    # The cluster client cannot queue for a connection (it raises MaxConnectionsError), so
    # each node gets head-room well above what the manager's coalesced calls keep in flight.
    return RedisCluster(
        startup_nodes=[ClusterNode(*_host_port(seed)) for seed in seeds],
        max_connections=max(max_connections, 512),
        health_check_interval=_HEALTH_CHECK_INTERVAL_S,
        **common,
    )


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Asks the Sentinels for the primary, and queues callers when every connection is busy
    (redis-py's own Sentinel pool raises instead), like the single-server client."""


class _SentinelManagedRedis(Redis):
    """The primary's client; closing it closes the Sentinel clients it asks, too."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            for client in self.sentinel_manager.sentinels:
                await client.aclose()


def _sentinel(settings: RedisSettings, master: str, common: dict[str, Any]) -> Redis:
    # The Sentinels: the same timeouts and TLS as the data nodes, credentials of their own.
    sentinel_options = {k: v for k, v in common.items() if k.startswith(("socket_", "ssl"))}
    sentinel_options |= _credentials(settings.sentinel_username, settings.sentinel_password, None)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [_host_port(address) for address in settings.sentinels],
        sentinel_kwargs=sentinel_options,
    )
    client: _SentinelManagedRedis = sentinel.master_for(
        master,
        redis_class=_SentinelManagedRedis,
        connection_pool_class=_BlockingSentinelPool,
        db=settings.sentinel_db,
        health_check_interval=_HEALTH_CHECK_INTERVAL_S,
        retry=_reconnect_once(),
        **common,
    )
    client.sentinel_manager = sentinel
    return client


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)
