"""Redis with an ACL user and password, and over TLS, against real redis-servers.

ACL runs on the bundled redis-server. TLS needs a redis-server built with TLS (Debian's
``redis-server`` package is; the bundled one is not): without one those tests skip, saying so.
The password never shows in an error message, a log line or a client's repr.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from pydantic import SecretStr
from redis.exceptions import RedisError

from controlplane.domain import NewUserLimits, ServiceKey
from controlplane.errors import InvalidInput
from controlplane.runtime.ports import free_port
from controlplane.runtime.redis_sentinel import SentinelSet
from controlplane.runtime.redis_server import RedisServer, find_redis_binary
from controlplane.settings import Settings
from controlplane.store import Store, connect
from controlplane.store.config import RedisSettings

USER, SECRET = "stateful-route", "s3cret-ACL-passw0rd"
KEY = ServiceKey("games", "lobby")
# The control plane's user may use every key under its prefix and run its scripts; the
# default user (no password) is switched off.
ACL = (
    "--user", "default", "off",
    "--user", USER, "on", f">{SECRET}", "~sr:*", "resetchannels", "&sr:*", "+@all",
)  # fmt: skip


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    with RedisServer(extra_args=ACL) as server:
        yield server


async def works(settings: RedisSettings) -> bool:
    """A binding written and read back through a client made from ``settings``."""
    store = Store.from_settings(settings)
    try:
        keys = store.keys(KEY)
        await store.redis.delete(keys.bindings)
        placed = await store.bindings.admit_many(keys, [("alice", 1)], 1.0, NewUserLimits())
        return placed == [(1, True)] and (await store.bindings.lookup_many(keys, ["alice"])) == [1]
    finally:
        await store.close()


async def test_an_acl_user_with_its_password_binds_users(acl_server: RedisServer) -> None:
    settings = RedisSettings(url=acl_server.url, username=USER, password=SecretStr(SECRET))
    assert await works(settings)


async def test_the_password_may_come_from_the_environment(
    acl_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATEFUL_ROUTE_REDIS__URL", acl_server.url)
    monkeypatch.setenv("STATEFUL_ROUTE_REDIS__USERNAME", USER)
    monkeypatch.setenv("STATEFUL_ROUTE_REDIS__PASSWORD", SECRET)
    settings = Settings.load().redis
    assert SECRET not in repr(settings)
    assert await works(settings)


async def test_a_password_file_is_read_for_each_new_connection(
    acl_server: RedisServer, tmp_path: Path
) -> None:
    password_file = tmp_path / "redis-password"
    password_file.write_text(SECRET + "\n")
    settings = RedisSettings(url=acl_server.url, username=USER, password_file=password_file)
    assert await works(settings)
    # A rotation: the user gets a second password, the file the new one, no restart.
    store = Store.from_settings(settings)
    try:
        await store.redis.acl_setuser(USER, enabled=True, passwords=["+rotated-passw0rd"])
        password_file.write_text("rotated-passw0rd\n")
        await store.redis.acl_setuser(USER, enabled=True, passwords=[f"-{SECRET}"])
        await store.redis.connection_pool.disconnect()  # every connection is made anew
        assert await store.redis.ping()
    finally:
        await store.redis.acl_setuser(
            USER, enabled=True, passwords=[f"+{SECRET}"], reset_passwords=True
        )
        await store.close()


def test_a_missing_password_file_stops_the_start_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(InvalidInput, match=r"cannot read the Redis password file .*nowhere"):
        connect(RedisSettings(username=USER, password_file=missing))


async def test_a_wrong_password_fails_and_no_message_or_log_shows_a_password(
    acl_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for password in (SECRET + "-wrong", SECRET):
        port = acl_server.port if password != SECRET else free_port()  # nobody listens there
        url = f"redis://127.0.0.1:{port}/0"
        client = connect(RedisSettings(url=url, username=USER, password=SecretStr(password)))
        try:
            with pytest.raises(RedisError) as failed:
                await client.ping()
            assert password not in str(failed.value)
            assert password not in repr(failed.value)
            assert password not in repr(client)
        finally:
            await client.aclose()
    assert SECRET not in caplog.text


def test_a_password_in_the_url_is_refused_without_repeating_it() -> None:
    with pytest.raises(ValueError, match="set password or password_file") as refused:
        Settings(redis={"url": f"redis://{USER}:{SECRET}@127.0.0.1:6379/0"})
    assert SECRET not in str(refused.value)


# -- TLS --------------------------------------------------------------------------------------


def redis_servers_on_path() -> list[str]:
    """Every redis-server on PATH but the bundled one (which is built without TLS)."""
    bundled = Path(find_redis_binary()).resolve()
    found: dict[Path, str] = {}
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found.setdefault(candidate.resolve(), str(candidate))
    return [path for resolved, path in found.items() if resolved != bundled]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PEM files: the CA, the server's certificate and key, a client's certificate and key."""
    folder = tmp_path_factory.mktemp("redis-tls")
    files = {name: folder / f"{name}.pem" for name in ("ca", "server", "client")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(files["server"])
    )
    ca.issue_cert("stateful-route").private_key_and_cert_chain_pem.write_to_path(
        str(files["client"])
    )
    return files


@pytest.fixture(scope="module")
def tls_server(tls_files: dict[str, Path]) -> Iterator[tuple[RedisServer, int]]:
    """A redis-server whose TLS port asks for a client certificate, with the ACL user; its
    plain port serves only the readiness probe."""
    for binary in redis_servers_on_path():
        tls_port = free_port()
        server = RedisServer(
            binary=binary,
            extra_args=(
                *ACL,
                "--tls-port", str(tls_port),
                "--tls-cert-file", str(tls_files["server"]),
                "--tls-key-file", str(tls_files["server"]),
                "--tls-ca-cert-file", str(tls_files["ca"]),
            ),
        )  # fmt: skip
        try:
            server.start()
        except RuntimeError:  # exited at once: this build has no TLS
            server.cleanup()
            continue
        try:
            yield server, tls_port
        finally:
            server.cleanup()
        return
    pytest.skip("no redis-server built with TLS on PATH (Debian: apt-get install redis-server)")


def over_tls(tls_server: tuple[RedisServer, int], **settings: object) -> RedisSettings:
    server, port = tls_server
    return RedisSettings.model_validate(
        {"url": f"rediss://{server.host}:{port}/0", "username": USER, "password": SECRET} | settings
    )


async def test_rediss_with_the_ca_and_a_client_certificate_binds_users(
    tls_server: tuple[RedisServer, int], tls_files: dict[str, Path]
) -> None:
    client = tls_files["client"]
    settings = over_tls(
        tls_server, tls_ca_file=tls_files["ca"], tls_cert_file=client, tls_key_file=client
    )
    assert await works(settings)


async def test_tls_true_upgrades_a_plain_url(
    tls_server: tuple[RedisServer, int], tls_files: dict[str, Path]
) -> None:
    server, port = tls_server
    client = tls_files["client"]
    settings = RedisSettings(
        url=f"redis://{server.host}:{port}/0",
        username=USER,
        password=SecretStr(SECRET),
        tls=True,
        tls_ca_file=tls_files["ca"],
        tls_cert_file=client,
        tls_key_file=client,
    )
    assert await works(settings)


async def test_a_server_certificate_from_another_ca_is_refused(
    tls_server: tuple[RedisServer, int], tls_files: dict[str, Path], tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    client = tls_files["client"]
    settings = over_tls(tls_server, tls_ca_file=other_ca, tls_cert_file=client, tls_key_file=client)
    with pytest.raises(RedisError, match="certificate verify failed"):
        await works(settings)


async def test_without_a_client_certificate_the_server_refuses(
    tls_server: tuple[RedisServer, int], tls_files: dict[str, Path]
) -> None:
    with pytest.raises(RedisError):
        await works(over_tls(tls_server, tls_ca_file=tls_files["ca"]))


async def test_a_sentinel_managed_primary_with_an_acl_user_binds_users() -> None:
    with SentinelSet(user=(USER, SECRET)) as sentinels:
        settings = RedisSettings(
            sentinels=sentinels.addresses,
            sentinel_master=sentinels.master_name,
            username=USER,
            password=SecretStr(SECRET),
        )
        assert await works(settings)
        nobody = settings.model_copy(update={"password": SecretStr("not-" + SECRET)})
        with pytest.raises(RedisError):
            await works(nobody)
