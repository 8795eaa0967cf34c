"""Start and stop a real Sentinel-managed primary/replica set on loopback ports.

One primary, its replicas and three Sentinels (quorum 2), all :class:`RedisServer` processes
owned by this object and stopped by PID. Timeouts are short so that a killed primary is
replaced within a few seconds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import redis

from controlplane.runtime.ports import free_port
from controlplane.runtime.redis_cluster import wait_until
from controlplane.runtime.redis_server import RedisServer


class SentinelSet:
    """A primary with ``replicas`` replicas, watched by ``sentinels`` Sentinels."""

    def __init__(
        self,
        master_name: str = "stateful-route",
        *,
        replicas: int = 1,
        sentinels: int = 3,
        host: str = "127.0.0.1",
        down_after_ms: int = 1000,
        appendonly: bool = False,
        user: tuple[str, str] | None = None,
    ) -> None:
        self.master_name = master_name
        self.host = host
        self.down_after_ms = down_after_ms
        self.appendonly = appendonly
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.quorum = sentinels // 2 + 1
        # An ACL user (name, password) the data nodes require, instead of their open default
        # user; the replicas and the Sentinels authenticate as it too.
        self.user = user
        self.primary: RedisServer | None = None
        self.replicas: list[RedisServer] = []
        self.sentinels: list[RedisServer] = []
        self._conf_dir = tempfile.mkdtemp(prefix="stateful-route-sentinel-")

    @property
    def addresses(self) -> list[str]:
        """``host:port`` of every Sentinel: what clients and settings are given."""
        return [f"{s.host}:{s.port}" for s in self.sentinels]

    @property
    def data_nodes(self) -> list[RedisServer]:
        return [n for n in (self.primary, *self.replicas) if n is not None]

    def start(self, timeout: float = 20.0) -> SentinelSet:
        try:
            self.primary = RedisServer(
                host=self.host, appendonly=self.appendonly, extra_args=self._acl()
            ).start()
            for _ in range(self.replica_count):
                replica = RedisServer(
                    host=self.host,
                    appendonly=self.appendonly,
                    extra_args=(
                        *self._acl(),
                        "--replicaof", self.host, str(self.primary.port),
                    ),
                )  # fmt: skip
                self.replicas.append(replica.start())
            for _ in range(self.sentinel_count):
                self.sentinels.append(self._sentinel(self.primary.port).start())
            wait_until(self._settled, timeout, "every Sentinel to see the replicas and each other")
        except BaseException:
            self.cleanup()
            raise
        return self

    def _acl(self) -> tuple[str, ...]:
        if self.user is None:
            return ()
        name, password = self.user
        return (
            "--user", "default", "off",
            "--user", name, "on", f">{password}", "~*", "&*", "+@all",
            "--masteruser", name, "--masterauth", password,
        )  # fmt: skip

    def _client(self, node: RedisServer) -> redis.Redis:
        """A client of a data node, as the ACL user if there is one."""
        name, password = self.user or (None, None)
        return redis.Redis(
            host=node.host, port=node.port, username=name, password=password,
            decode_responses=True,
        )  # fmt: skip

    def _sentinel(self, primary_port: int) -> RedisServer:
        port = free_port(self.host)
        config = Path(self._conf_dir) / f"sentinel-{port}.conf"
        name = self.master_name
        # Sentinel rewrites this file as it learns the topology, hence one writable file each.
        config.write_text(
            f"sentinel monitor {name} {self.host} {primary_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {name} {max(3 * self.down_after_ms, 3000)}\n"
            f"sentinel parallel-syncs {name} 1\n"
            + (
                f"sentinel auth-user {name} {self.user[0]}\n"
                f"sentinel auth-pass {name} {self.user[1]}\n"
                if self.user
                else ""
            )
        )
        return RedisServer(
            port, host=self.host, config_file=str(config), extra_args=("--sentinel",)
        )

    def _settled(self) -> bool:
        for sentinel in self.sentinels:
            with redis.Redis(host=sentinel.host, port=sentinel.port, decode_responses=True) as c:
                fields = c.sentinel_master(self.master_name)
                if int(fields["num-slaves"]) < self.replica_count:
                    return False
                if int(fields["num-other-sentinels"]) < self.sentinel_count - 1:
                    return False
        for replica in self.replicas:
            with self._client(replica) as c:
                if c.info("replication")["master_link_status"] != "up":
                    return False
        return True

    def current_primary(self) -> RedisServer:
        """The data node the Sentinels name as primary now."""
        for sentinel in self.sentinels:
            if not sentinel.ping():
                continue
            with redis.Redis(host=sentinel.host, port=sentinel.port, decode_responses=True) as c:
                _, port = c.sentinel_get_master_addr_by_name(self.master_name)
                return next(n for n in self.data_nodes if n.port == int(port))
        raise LookupError("no Sentinel answers")

    def cleanup(self) -> None:
        for node in (*self.sentinels, *self.replicas, *([self.primary] if self.primary else [])):
            node.cleanup()
        self.sentinels, self.replicas, self.primary = [], [], None
        for path in Path(self._conf_dir).glob("*"):
            path.unlink()
        Path(self._conf_dir).rmdir()

    def __enter__(self) -> SentinelSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
