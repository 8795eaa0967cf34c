"""A whole stateful-route stack on one machine: Redis, the control plane, demo pods, Envoy.

``stateful-route demo`` runs it until interrupted; the end-to-end tests run it to kill and
restart its parts. Every process is started here, in its own session, and stopped by PID.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import yaml

from controlplane.domain import NewUserLimits, PodState
from controlplane.errors import InvalidInput
from controlplane.runtime.demo_pod import TOKEN_ENV
from controlplane.runtime.envoy import EnvoyProcess, bundled_bootstrap, load_bootstrap
from controlplane.runtime.ports import free_port, port_is_free
from controlplane.runtime.redis_server import RedisServer
from controlplane.runtime.stack_tls import StackTls, client_session

NAMESPACE, SERVICE, UID_HEADER = "demo", "echo", "x-uid"

Transport = Literal["rest", "ads", "delta"]
Progress = Callable[[str], None]

log = logging.getLogger("stateful_route.stack")


class ManagedProcess:
    """A child process in its own session, logging to a file, stopped only by its PID."""

    def __init__(
        self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.env = env  # None: this process's environment
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self.env,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pause(self) -> None:
        """SIGSTOP: a pod that hangs (its sockets stay open, it answers nothing)."""
        if self.process is not None and self.running:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        if self.process is not None and self.running:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: the crash a fault test wants."""
        if self.process is not None and self.running:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    async def stop(self, timeout_s: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


_SUPERVISE_EVERY_S = 0.2


@dataclass
class Backoff:
    """Waits before restarting something that died: doubling from ``first_s`` up to ``max_s``,
    and from ``first_s`` again once it had stayed up ``reset_after_s``."""

    first_s: float = 0.5
    max_s: float = 30.0
    reset_after_s: float = 60.0
    _delay: float = 0.0
    _last: float | None = None

    def next(self, now: float) -> float:
        if self._last is None or now - self._last > self.reset_after_s + self._delay:
            self._delay = self.first_s
        else:
            self._delay = min(self._delay * 2, self.max_s)
        self._last = now
        return self._delay


@dataclass
class StackConfig:
    pods: int = 4
    proxy_port: int = 0  # 0: a free one
    admin_port: int = 0
    transport: Transport = "rest"
    token: str | None = None
    host: str = "127.0.0.1"  # everything binds to loopback only
    health_interval_s: float = 1.0
    route_window_s: float = 600.0
    new_users: NewUserLimits = field(default_factory=NewUserLimits)  # the demo service's bounds
    # xDS and the miss path over mutual TLS, the admin API over TLS, with a throwaway CA.
    tls: bool = False
    # Envoy writes its outlier ejections to a file the control plane follows (a sidecar's
    # signal); without it the control plane learns of failures over the network only.
    share_event_log: bool = True
    extra_settings: dict[str, Any] = field(default_factory=dict)
    envoy_binary: str | None = None  # None: find_envoy_binary's
    # Merged into the demo service's settings (e.g. {"failover": {"hang_grace_s": 3}}).
    service_settings: dict[str, Any] = field(default_factory=dict)


class LocalStack:
    """Start with ``start()``, stop with ``stop()``; every part can be killed and restarted."""

    def __init__(self, config: StackConfig, workdir: Path | None = None) -> None:
        self.config = config
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="stateful-route-stack-"))
        self.token = config.token or _token()
        self.redis: RedisServer | None = None
        self.controlplane: ManagedProcess | None = None
        self.pods: list[ManagedProcess] = []
        self.pod_ports: list[int] = []
        self.envoy: EnvoyProcess | None = None
        self.proxy_port = config.proxy_port
        self.admin_port = config.admin_port
        self.xds_rest_port = 0
        self.xds_grpc_port = 0
        self.envoy_admin_port = 0
        self.tls: StackTls | None = None  # with ``config.tls``, made at start

    # -- addresses ----------------------------------------------------------------------------

    @property
    def admin_url(self) -> str:
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{self.config.host}:{self.admin_port}"

    @property
    def ca_file(self) -> Path | None:
        """The throwaway CA's certificate (with ``tls``): what clients of the stack trust."""
        return self.tls.ca_file if self.tls is not None else None

    @property
    def envoy_node_id(self) -> str:
        return f"demo-envoy-{self.config.transport}"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.config.host}:{self.proxy_port}"

    @property
    def outlier_log(self) -> Path:
        return self.workdir / "envoy-outlier-events.log"

    @property
    def health_log(self) -> Path:
        """Envoy's active health-check events (for services that enable Envoy's checks)."""
        return self.workdir / "envoy-health-events.log"

    # -- whole stack --------------------------------------------------------------------------

    async def start(self, progress: Progress = lambda _: None) -> LocalStack:
        try:
            self._choose_ports()
            if self.config.tls:
                progress(f"a throwaway CA in {self.workdir / 'tls'}")
                self.tls = StackTls(self.workdir / "tls", self.envoy_node_id)
            progress(f"redis-server on {self.config.host}")
            self.redis = await asyncio.to_thread(
                RedisServer(
                    host=self.config.host, appendonly=True, data_dir=str(self.workdir)
                ).start
            )
            # The pods listen before the control plane registers them (from its configuration)
            # and checks them at once: no check meets a pod still starting and marks it failing.
            progress(f"{self.config.pods} demo pods")
            await self.start_pods()
            progress(f"control plane (admin {self.admin_url})")
            await self.start_controlplane()
            progress(f"envoy ({self.config.transport} xDS, proxy {self.proxy_url})")
            await self.start_envoy()
            progress("waiting for the first route through envoy")
            await self.wait_until_routing()
            progress("waiting for the control plane to see every pod healthy")
            await self.wait_until_pods_healthy()
        except BaseException:
            if self.controlplane is not None:  # its log goes with the working directory
                log.warning("stack_failed controlplane_log_tail=\n%s", self.controlplane.log_tail())
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Stop every process this stack started, Envoy first, Redis last."""
        if self.envoy is not None:
            await self.envoy.close()
            self.envoy = None
        for pod in self.pods:
            await pod.stop()
        if self.controlplane is not None:
            await self.controlplane.stop()
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
            self.redis = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _choose_ports(self) -> None:
        for name in ("proxy_port", "admin_port"):
            port = getattr(self.config, name)
            if port and not port_is_free(port, self.config.host):
                flag = name.replace("_", "-")
                raise InvalidInput(
                    f"port {port} is taken on {self.config.host}: choose another with --{flag}"
                )
        self.proxy_port = self.config.proxy_port or free_port(self.config.host)
        self.admin_port = self.config.admin_port or free_port(self.config.host)
        self.xds_rest_port = free_port(self.config.host)
        self.xds_grpc_port = free_port(self.config.host)
        self.envoy_admin_port = free_port(self.config.host)
        self.pod_ports = [free_port(self.config.host) for _ in range(self.config.pods)]

    # -- parts --------------------------------------------------------------------------------

    def controlplane_settings(self) -> dict[str, Any]:
        assert self.redis is not None
        host = self.config.host
        settings: dict[str, Any] = {
            "redis": {"url": self.redis.url},
            "listen": {
                "host": host,
                "admin_port": self.admin_port,
                "xds_rest_port": self.xds_rest_port,
                "xds_grpc_port": self.xds_grpc_port,
            },
            "admin": {"token": self.token},
            "xds": {
                "default_group": {"listener_address": host, "listener_port": self.proxy_port},
            },
            "upkeep": {"route_window_s": self.config.route_window_s},
            # Envoy names its admin API in its node metadata (load_bootstrap's admin_port).
            "signals": {"poll_discovered_envoys": True},
            "services": [_demo_service(self.config, self.pod_ports)],
        }
        if self.config.share_event_log:
            settings["xds"]["health_event_log_path"] = str(self.health_log)
            settings["signals"].update(
                outlier_event_log=str(self.outlier_log), health_event_log=str(self.health_log)
            )
        tls = self.tls.controlplane_settings() if self.tls is not None else {}
        return _merge(_merge(settings, tls), self.config.extra_settings)

    async def start_controlplane(self) -> None:
        config = self.workdir / "controlplane.yaml"
        config.write_text(yaml.safe_dump(self.controlplane_settings(), sort_keys=False))
        self.controlplane = ManagedProcess(
            "controlplane",
            [sys.executable, "-m", "controlplane.cli", "serve", "--config", str(config)],
            self.workdir / "controlplane.log",
        )
        self.controlplane.start()
        await self._wait_for(
            f"{self.admin_url}/healthz", self.controlplane, "the control plane", status=200
        )

    async def keep_controlplane_up(self, say: Progress) -> None:
        """Restart the control plane whenever it exits, backing off while it keeps dying; until
        cancelled (cancel it before ``stop``). Pods are left alone: killing them is how users
        try failover."""
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        while True:
            await asyncio.sleep(_SUPERVISE_EVERY_S)
            process = self.controlplane
            if process is None or process.process is None or process.running:
                continue
            delay = backoff.next(loop.time())
            say(
                f"the control plane exited (code {process.process.returncode}); restarting it "
                f"in {delay:g} s (log: {process.log_path})"
            )
            await asyncio.sleep(delay)
            try:
                await self.start_controlplane()
            except (RuntimeError, TimeoutError, OSError) as exc:
                say(f"the control plane did not start again: {exc}")
                continue
            say("the control plane is back")

    async def start_pods(self) -> None:
        self.pods = [self._pod(i) for i in range(self.config.pods)]
        for pod in self.pods:
            pod.start()
        for index, pod in enumerate(self.pods):
            await self._wait_for(self.pod_url(index) + "/health", pod, pod.name, status=200)

    def _pod(self, index: int) -> ManagedProcess:
        args = [
            sys.executable, "-m", "controlplane.runtime.demo_pod",
            "--index", str(index),
            "--host", self.config.host,
            "--port", str(self.pod_ports[index]),
            "--report-to", self.admin_url,
            *(["--ca-file", str(self.ca_file)] if self.ca_file else []),
        ]  # fmt: skip
        # The token through the environment: a command line is visible to every local user.
        env = {**os.environ, TOKEN_ENV: self.token}
        return ManagedProcess(f"pod-{index}", args, self.workdir / f"pod-{index}.log", env)

    def pod_url(self, index: int) -> str:
        return f"http://{self.config.host}:{self.pod_ports[index]}"

    async def restart_pod(self, index: int) -> None:
        pod = self.pods[index] = self._pod(index)
        pod.start()
        await self._wait_for(self.pod_url(index) + "/health", pod, pod.name, status=200)

    async def start_envoy(self) -> None:
        transport = self.config.transport
        port = self.xds_rest_port if transport == "rest" else self.xds_grpc_port
        tls = self.tls.envoy() if self.tls is not None else None
        config = load_bootstrap(
            bundled_bootstrap(transport),
            xds_port=port,
            node_id=self.envoy_node_id,
            node_cluster="default",
            grpc_port=self.xds_grpc_port,
            admin_port=self.envoy_admin_port,
            tls=tls,
        )
        if self.config.share_event_log:
            config.setdefault("cluster_manager", {}).setdefault("outlier_detection", {})[
                "event_log_path"
            ] = str(self.outlier_log)
        self.envoy = await EnvoyProcess(config, binary=self.config.envoy_binary).start()

    async def restart_envoy(self) -> None:
        assert self.envoy is not None
        await self.envoy.stop()
        await self.envoy.start()

    async def wait_until_routing(self, timeout_s: float = 20.0) -> None:
        """Until a request through Envoy reaches a pod."""

        def failure() -> str:
            tail = self.envoy.log_tail() if self.envoy else ""
            return f"envoy did not route within {timeout_s}s\n{tail}"

        async with aiohttp.ClientSession(headers={UID_HEADER: "stack-probe"}) as session:
            await poll_until(session, self.proxy_url + "/", _status(200), timeout_s, failure)

    async def wait_until_pods_healthy(self, timeout_s: float = 20.0) -> None:
        """Until the control plane holds every pod of the demo service healthy."""
        url = f"{self.admin_url}/api/v1/services/{NAMESPACE}/{SERVICE}/pods"
        headers = {"Authorization": f"Bearer {self.token}"}
        states: dict[int, str] = {}

        async def all_healthy(response: aiohttp.ClientResponse) -> bool:
            if response.status == 200:
                states.update({p["pod_index"]: p["state"] for p in await response.json()})
            healthy = [i for i, state in states.items() if state == PodState.HEALTHY]
            return len(healthy) == self.config.pods

        def failure() -> str:
            tail = self.controlplane.log_tail() if self.controlplane else ""
            return f"pods not all healthy within {timeout_s}s: {states}\n{tail}"

        async with client_session(self.tls, headers=headers) as session:
            await poll_until(session, url, all_healthy, timeout_s, failure)

    async def _wait_for(
        self, url: str, process: ManagedProcess, what: str, *, status: int, timeout_s: float = 20.0
    ) -> None:
        def alive() -> None:
            if not process.running:
                raise RuntimeError(f"{what} exited:\n{process.log_tail()}")

        def failure() -> str:
            return f"{what} did not answer in {timeout_s}s:\n{process.log_tail()}"

        async with client_session(self.tls) as session:
            await poll_until(
                session, url, _status(status), timeout_s, failure, every_s=0.05, alive=alive
            )


def _demo_service(config: StackConfig, pod_ports: list[int]) -> dict[str, Any]:
    """The demo service as the control plane's settings file gives it, its pods included."""
    # A busy laptop answers slowly: a generous timeout, while a dead pod (connection refused)
    # fails at once and Envoy's outlier detection reports it sooner still.
    check = {
        "interval_s": config.health_interval_s,
        "timeout_s": 2.0,
        "unhealthy_threshold": 3,
        "healthy_threshold": 2,
    }
    outlier_detection = {
        "consecutive_5xx": 3,
        "consecutive_gateway_failure": 3,
        "interval_s": 1.0,
        "base_ejection_time_s": 10.0,
        "max_ejection_percent": 100,
    }
    settings = {
        "uid_header": UID_HEADER,
        "domains": ["*"],
        "health_check": check,
        "envoy": {"outlier_detection": outlier_detection},
        "new_users": config.new_users.model_dump(mode="json"),
    }
    return {
        "namespace": NAMESPACE,
        "name": SERVICE,
        "settings": _merge(settings, config.service_settings),
        "pods": [
            {"index": i, "host": config.host, "port": port} for i, port in enumerate(pod_ports)
        ],
    }


async def poll_until(
    session: aiohttp.ClientSession,
    url: str,
    done: Callable[[aiohttp.ClientResponse], Awaitable[bool]],
    timeout_s: float,
    failure: Callable[[], str],
    *,
    every_s: float = 0.1,
    alive: Callable[[], None] = lambda: None,
) -> None:
    """GET ``url`` until ``done`` says so of an answer; TimeoutError with ``failure()`` after
    ``timeout_s`` (``alive`` raises first if what should answer is gone)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive()
        try:
            async with session.get(url) as response:
                if await done(response):
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(failure())
        await asyncio.sleep(every_s)


def _status(expected: int) -> Callable[[aiohttp.ClientResponse], Awaitable[bool]]:
    async def done(response: aiohttp.ClientResponse) -> bool:
        return response.status == expected

    return done


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _token() -> str:
    return os.urandom(16).hex()
