"""A stateful-route fleet on separate hosts (network namespaces), for the fleet tests and bench.

Hosts and what runs on each (every process started with ``ip netns exec``, in its own
session, stopped by PID):

- ``redis``: Redis;
- ``gw1``, ``gw2``: an Envoy and a control-plane replica beside it. With ``log_tail`` the
  replica follows its own Envoy's outlier event log and polls its own Envoy's admin API (the
  sidecar signals);
- ``gw3``: an Envoy alone, whose xDS stream goes to a replica on another host. It writes no
  event log: no replica can read what it sees;
- ``pod0`` ... ``podN``: one demo pod each, registered by name (``pod-<i>``, the index its
  ordinal). The replicas resolve the names through their host's own /etc/hosts: ``ip netns
  exec`` mounts ``/etc/netns/<namespace>/hosts`` over /etc/hosts in a mount namespace of its
  own, and a pod that moves is re-pointed there (``publish_pod_names``).

With ``network_signals`` every Envoy sends load reports (LRS) to the replica it is attached
to, and names its admin API in its node metadata for the replicas to poll.

Each host has its own working directory: no Envoy and control plane share one but a sidecar
pair's event log. Every Envoy's xDS cluster lists the replicas by priority (its own first),
with a TCP health check, so it reconnects to the other one when its replica dies.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from controlplane.runtime.demo_pod import TOKEN_ENV
from controlplane.runtime.envoy import EnvoyProcess
from controlplane.runtime.redis_server import find_redis_binary
from controlplane.runtime.stack import UID_HEADER, ManagedProcess
from tests.support.fleet.configs import (
    ADMIN_PORT,
    POD_PORT,
    PROXY_PORT,
    REDIS_PORT,
    REPLICA_HOSTS,
    SERVICE_PATH,
    FleetConfig,
    envoy_bootstrap,
    replica_settings,
)
from tests.support.fleet.network import Host, Network


@dataclass
class Replica:
    host: Host
    process: ManagedProcess
    envoy_log: Path | None  # the sidecar Envoy's outlier event log it follows

    @property
    def url(self) -> str:
        return f"http://{self.host.address}:{ADMIN_PORT}"


@dataclass
class Gateway:
    host: Host
    envoy: EnvoyProcess
    replicas: tuple[str, ...]  # the replicas its xDS cluster lists, by priority

    @property
    def proxy_url(self) -> str:
        return f"http://{self.host.address}:{PROXY_PORT}"

    @property
    def node_id(self) -> str:
        return self.host.name


@dataclass
class Pod:
    host: Host
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{self.host.address}:{POD_PORT}"


class Fleet:
    """Start with ``start()``, stop with ``stop()`` (also after a failed start)."""

    def __init__(self, config: FleetConfig | None = None) -> None:
        self.config = config or FleetConfig()
        self.network = Network()
        self.workdir = Path(tempfile.mkdtemp(prefix="stateful-route-fleet-"))
        self.redis: ManagedProcess | None = None
        self.replicas: dict[str, Replica] = {}
        self.gateways: dict[str, Gateway] = {}
        self.pods: dict[int, Pod] = {}
        self._reschedules = 0
        self._pod_processes: list[ManagedProcess] = []
        self.http: aiohttp.ClientSession | None = None

    # -- whole fleet ------------------------------------------------------------------------

    async def start(self) -> Fleet:
        try:
            await asyncio.to_thread(self.network.open)
            names = ["redis", "gw1", "gw2", "gw3", *(f"pod{i}" for i in range(self.config.pods))]
            await asyncio.to_thread(lambda: [self.host(name) for name in names])
            self.http = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self.config.token}"},
                connector=aiohttp.TCPConnector(limit=128),
            )
            await self.start_redis()
            # Pods listen before a replica registers them and the leader checks them.
            await asyncio.gather(*(self.start_pod(i) for i in range(self.config.pods)))
            await asyncio.to_thread(self.publish_pod_names)  # before the replicas start
            await asyncio.gather(self.start_replica("gw1"), self.start_replica("gw2"))
            await asyncio.gather(
                self.add_gateway("gw1", ("gw1", "gw2")),
                self.add_gateway("gw2", ("gw2", "gw1")),
                self.add_gateway("gw3", ("gw1", "gw2")),
            )
            await self.wait_until_pods_healthy()
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Stop every process by PID, Envoys first, then delete hosts, links and files."""
        try:
            for gateway in self.gateways.values():
                await gateway.envoy.close()
            for process in self._pod_processes:  # rescheduled ones' old processes too
                await process.stop()
            for replica in self.replicas.values():
                await replica.process.stop()
            if self.redis is not None:
                await self.redis.stop()
        finally:
            if self.http is not None:
                await self.http.close()
            await asyncio.to_thread(self.network.close)
            shutil.rmtree(self.workdir, ignore_errors=True)

    def host(self, name: str) -> Host:
        """The host ``name``, made on first use, with its own working directory."""
        found = self.network.hosts.get(name) or self.network.add_host(name)
        (self.workdir / name).mkdir(exist_ok=True)
        return found

    def _process(self, host: Host, role: str, args: Sequence[str]) -> ManagedProcess:
        env = {**os.environ, TOKEN_ENV: self.config.token}
        log = self.workdir / host.name / f"{role}.log"
        return ManagedProcess(f"{role}@{host.name}", host.command(*args), log, env)

    # -- parts ------------------------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        return f"redis://{self.network.hosts['redis'].address}:{REDIS_PORT}/0"

    async def start_redis(self) -> None:
        host = self.network.hosts["redis"]
        args = [
            find_redis_binary(), "--port", str(REDIS_PORT), "--bind", host.address,
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir / "redis"),
        ]  # fmt: skip
        self.redis = self._process(host, "redis", args)
        self.redis.start()
        await self._until_listening(self.redis, host.address, REDIS_PORT)

    async def start_pod(self, index: int, host: Host | None = None) -> Pod:
        """Pod ``index`` on its host (or on ``host``: a pod rescheduled elsewhere)."""
        host = host or self.network.hosts[f"pod{index}"]
        # No load reports: a pod pinned to one replica would lose them when that one is killed.
        args = [
            sys.executable, "-m", "controlplane.runtime.demo_pod", "--index", str(index),
            "--host", host.address, "--port", str(POD_PORT),
        ]  # fmt: skip
        pod = self.pods[index] = Pod(host, self._process(host, "pod", args))
        self._pod_processes.append(pod.process)
        pod.process.start()
        await self._until_answering(pod.process, pod.url + "/health")
        return pod

    def publish_pod_names(self) -> None:
        """Every replica host's /etc/hosts names each pod (``pod-<i>``) at its address now."""
        names = {f"pod-{i}": pod.host.address for i, pod in self.pods.items()}
        for name in REPLICA_HOSTS:
            self.network.hosts[name].write_hosts(names)

    async def reschedule_pod(self, index: int) -> Pod:
        """Pod ``index`` started again on a new host (a new address) under its name, as an
        orchestrator rolls it; the old process is left running (``stop_pod`` it)."""
        self._reschedules += 1
        host = await asyncio.to_thread(self.host, f"pod{index}r{self._reschedules}")
        pod = await self.start_pod(index, host)
        await asyncio.to_thread(self.publish_pod_names)
        return pod

    async def stop_pod(self, pod: Pod) -> None:
        """Stop a pod's process (SIGTERM) and delete its host."""
        await pod.process.stop()
        await asyncio.to_thread(self.network.remove_host, pod.host.name)

    def _envoy_log(self, name: str) -> Path | None:
        """The outlier event log a sidecar pair on ``name`` shares, or None (not sharing)."""
        if not self.config.log_tail or name == "gw3":
            return None
        return self.workdir / name / "envoy-outlier-events.log"

    async def start_replica(self, name: str) -> Replica:
        """The control-plane replica on host ``name`` (again, after a kill)."""
        host = self.network.hosts[name]
        envoy_log = self._envoy_log(name)
        config = self.workdir / name / "controlplane.yaml"
        config.write_text(
            yaml.safe_dump(
                replica_settings(self.config, host.address, self.redis_url, envoy_log),
                sort_keys=False,
            )
        )
        args = [sys.executable, "-m", "controlplane.cli", "serve", "--config", str(config)]
        replica = Replica(host, self._process(host, "controlplane", args), envoy_log)
        self.replicas[name] = replica
        replica.process.start()
        await self._until_answering(replica.process, replica.url + "/healthz")
        return replica

    async def add_gateway(self, name: str, replicas: Sequence[str]) -> Gateway:
        """An Envoy on host ``name`` (made if new) whose xDS goes to ``replicas`` in order."""
        host = await asyncio.to_thread(self.host, name)
        envoy = EnvoyProcess(
            envoy_bootstrap(
                self.config,
                name,
                host.address,
                [self.network.hosts[r].address for r in replicas],
                self._envoy_log(name),
            ),
            command_prefix=host.command(),
            extra_args=("--concurrency", "1"),
        )
        gateway = self.gateways[name] = Gateway(host, envoy, tuple(replicas))
        await envoy.start()
        await self.wait_until_routing(gateway)
        return gateway

    async def remove_gateway(self, name: str) -> None:
        """Stop the gateway's Envoy (and its replica, if any) and delete its host."""
        gateway = self.gateways.pop(name)
        await gateway.envoy.close()
        replica = self.replicas.pop(name, None)
        if replica is not None:
            await replica.process.stop()
        await asyncio.to_thread(self.network.remove_host, name)

    # -- asking -----------------------------------------------------------------------------

    async def ask(self, gateway: str, uid: str) -> dict[str, Any]:
        """One request of ``uid`` through the gateway's Envoy: the pod's answer, or the
        failure as ``{"status": ...}``."""
        assert self.http is not None
        url = self.gateways[gateway].proxy_url + "/"
        async with self.http.get(url, headers={UID_HEADER: uid}) as response:
            if response.status != 200:
                return {"status": response.status, "body": await response.text()}
            answer: dict[str, Any] = await response.json()
            return answer

    async def admin(self, replica: str, method: str, path: str, body: object = None) -> Any:
        assert self.http is not None
        url = self.replicas[replica].url + path
        async with self.http.request(method, url, json=body) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def any_admin(self, method: str, path: str, body: object = None) -> Any:
        """The call on the first replica that answers."""
        errors: list[BaseException] = []
        for name, replica in self.replicas.items():
            if replica.process.running:
                try:
                    return await self.admin(name, method, path, body)
                except aiohttp.ClientError as exc:
                    errors.append(exc)
        raise RuntimeError(f"no replica answered {method} {path}: {errors}")

    async def leader(self) -> str | None:
        """The replica that holds the leader lease now, if one answers so."""
        for name, replica in self.replicas.items():
            if not replica.process.running:
                continue
            try:
                if (await self.admin(name, "GET", "/healthz"))["leader"]:
                    return name
            except aiohttp.ClientError:
                continue
        return None

    async def pods_state(self) -> dict[int, dict[str, Any]]:
        return {p["pod_index"]: p for p in await self.any_admin("GET", f"{SERVICE_PATH}/pods")}

    async def attached(self, replica: str) -> set[str]:
        """The node ids of the Envoys whose xDS stream is on ``replica``."""
        envoys = await self.admin(replica, "GET", "/api/v1/envoys")
        return {envoy["node_id"] for envoy in envoys}

    # -- waiting ----------------------------------------------------------------------------

    async def wait_until_routing(self, gateway: Gateway, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if "pod" in await self.ask(gateway.host.name, "fleet-probe"):
                    return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{gateway.node_id} did not route: {gateway.envoy.log_tail()}")
            await asyncio.sleep(0.1)

    async def wait_until_pods_healthy(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        states: dict[int, str] = {}
        while True:
            states = {i: p["state"] for i, p in (await self.pods_state()).items()}
            if list(states.values()).count("healthy") == self.config.pods:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"pods not all healthy within {timeout_s}s: {states}")
            await asyncio.sleep(0.1)

    async def _until_answering(
        self, process: ManagedProcess, url: str, timeout_s: float = 20.0
    ) -> None:
        assert self.http is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if not process.running:
                raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
            try:
                async with self.http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{process.name} did not answer:\n{process.log_tail()}")
            await asyncio.sleep(0.05)

    async def _until_listening(
        self, process: ManagedProcess, address: str, port: int, timeout_s: float = 10.0
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if not process.running:
                raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
            try:
                _, writer = await asyncio.open_connection(address, port)
                writer.close()
                await writer.wait_closed()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{process.name} did not listen") from None
                await asyncio.sleep(0.05)
