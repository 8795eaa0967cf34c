"""Start and stop a real Redis Cluster on loopback ports (tests, benchmarks, the demo).

Every node is a :class:`RedisServer` with ``--cluster-enabled yes``; ``redis-cli --cluster
create`` then assigns the 16384 slots to the masters and a replica to each. Timeouts are short
so that a killed master is replaced within a couple of seconds.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import redis

from controlplane.runtime.ports import free_port, port_is_free
from controlplane.runtime.redis_server import RedisServer, find_redis_binary

_BUS_OFFSET = 10_000  # Redis Cluster talks node-to-node on port + 10000


def free_cluster_port(host: str = "127.0.0.1", taken: frozenset[int] = frozenset()) -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port(host)
        if port + _BUS_OFFSET <= 65535 and port not in taken and port_is_free(port + _BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair (p, p+10000) on loopback")


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


class RedisClusterNodes:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, owned by this
    object: every process it starts it alone stops, by PID."""

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        *,
        host: str = "127.0.0.1",
        node_timeout_ms: int = 1000,
        appendonly: bool = False,
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.host = host
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.appendonly = appendonly
        self.nodes: list[RedisServer] = []

    @property
    def addresses(self) -> list[str]:
        """``host:port`` of every node: the seed list for clients and settings."""
        return [f"{node.host}:{node.port}" for node in self.nodes]

    def start(self, timeout: float = 20.0) -> RedisClusterNodes:
        try:
            self._start_nodes()
            self._create(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _start_nodes(self) -> None:
        taken: set[int] = set()
        for _ in range(self.masters * (1 + self.replicas)):
            port = free_cluster_port(self.host, frozenset(taken))
            taken.add(port)
            node = RedisServer(
                port,
                host=self.host,
                appendonly=self.appendonly,
                extra_args=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", str(self.node_timeout_ms),
                    # A replica may always take over: tests kill masters on purpose.
                    "--cluster-replica-validity-factor", "0",
                ),
            )  # fmt: skip
            self.nodes.append(node)
            node.start()

    def _create(self, timeout: float) -> None:
        subprocess.run(
            [
                find_redis_binary("redis-cli"),
                "--cluster", "create", *self.addresses,
                "--cluster-replicas", str(self.replicas),
                "--cluster-yes",
            ],
            check=True, capture_output=True, timeout=timeout,
        )  # fmt: skip
        wait_until(self._settled, timeout, "the cluster to be ok with every replica in sync")

    def _settled(self) -> bool:
        for node in self.nodes:
            with redis.Redis(host=node.host, port=node.port, decode_responses=True) as client:
                info = client.cluster("info")
                if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != len(
                    self.nodes
                ):
                    return False
                replication = client.info("replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
        return True

    def node_of_slot(self, slot: int) -> RedisServer:
        """The node currently serving ``slot`` (asked of any live node)."""
        for node in self.nodes:
            if not node.ping():
                continue
            with redis.Redis(host=node.host, port=node.port, decode_responses=True) as client:
                for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end:
                        return self._by_port(int(master[1]))
        raise LookupError(f"no live node serves slot {slot}")

    def _by_port(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
        self.nodes = []

    def __enter__(self) -> RedisClusterNodes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
