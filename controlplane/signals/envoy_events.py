"""What Envoy says about pods: its outlier and health-check event logs, and its admin API.

Parsing is pure (``parse_outlier_event``, ``parse_health_event``, ``parse_host_stats``); the
readers below only tail files or poll admin APIs and hand the results to the manager.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import aiohttp

from controlplane.domain import HealthSignal, LoadReport, ServiceKey
from controlplane.errors import StatefulRouteError, UnknownService
from controlplane.manager import StatefulRouteManager

log = logging.getLogger("stateful_route.signals")


@dataclass(frozen=True, slots=True)
class HostSignal:
    """Envoy's word on one host of one cluster."""

    cluster: str
    address: str  # "ip:port"
    signal: HealthSignal
    reason: str


@dataclass(frozen=True, slots=True)
class HostStats:
    cluster: str
    address: str
    active_requests: int
    active_connections: int
    requests_total: int  # requests this Envoy sent the host since it started (a counter)
    # Why this Envoy keeps requests away from the host ("failed_outlier_check", ...); "": none.
    ejected_for: str = ""


def parse_outlier_event(line: str) -> HostSignal | None:
    """One line of ``cluster_manager.outlier_detection.event_log_path``."""
    event = _json(line)
    action = event.get("action")
    if action not in ("EJECT", "UNEJECT") or "upstream_url" not in event:
        return None
    signal = HealthSignal.EJECTED if action == "EJECT" else HealthSignal.UNEJECTED
    reason = f"envoy outlier detection: {event.get('type', 'unknown').lower()}"
    return HostSignal(
        str(event.get("cluster_name", "")), str(event["upstream_url"]), signal, reason
    )


def parse_health_event(line: str) -> HostSignal | None:
    """One line of the ``envoy.health_check.event_sink.file`` event log."""
    event = _json(line)
    socket = event.get("host", {}).get("socket_address", {})
    if "address" not in socket:
        return None
    address = f"{socket['address']}:{socket.get('port_value', 0)}"
    cluster = str(event.get("cluster_name", ""))
    if "eject_unhealthy_event" in event:
        failure = event["eject_unhealthy_event"].get("failure_type", "active").lower()
        return HostSignal(cluster, address, HealthSignal.EJECTED, f"envoy health check: {failure}")
    if "add_healthy_event" in event:
        return HostSignal(cluster, address, HealthSignal.UNEJECTED, "envoy health check passed")
    return None


def parse_host_stats(clusters: dict[str, Any]) -> Iterator[HostStats]:
    """Every host of every cluster in ``/clusters?format=json``."""
    for cluster in clusters.get("cluster_statuses", []):
        for host in cluster.get("host_statuses", []):
            socket = host.get("address", {}).get("socket_address", {})
            if "address" not in socket:
                continue
            # Envoy leaves out "value" for a stat that is zero.
            stats = {s.get("name"): int(s.get("value", 0)) for s in host.get("stats", [])}
            flags = host.get("health_status", {})
            yield HostStats(
                cluster=str(cluster.get("name", "")),
                address=f"{socket['address']}:{socket.get('port_value', 0)}",
                active_requests=stats.get("rq_active", 0),
                active_connections=stats.get("cx_active", 0),
                requests_total=stats.get("rq_total", 0),
                ejected_for=",".join(f for f in _EJECTION_FLAGS if flags.get(f)),
            )


# Envoy's own verdicts on a host; its EDS health (what we told it) is left out.
_EJECTION_FLAGS = ("failed_outlier_check", "failed_active_health_check")


def _json(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def service_of(cluster: str) -> ServiceKey | None:
    """The service behind an Envoy cluster name ("namespace/name"), if it is one of ours."""
    namespace, slash, name = cluster.partition("/")
    return ServiceKey(namespace, name) if slash else None


class PodLocator:
    """Maps (cluster, "ip:port") to (service, pod index) using the manager's current state."""

    def __init__(self, manager: StatefulRouteManager) -> None:
        self._manager = manager

    async def locate(self, cluster: str, address: str) -> tuple[ServiceKey, int] | None:
        found = await self.pods_by_address(cluster)
        if found is None:
            return None
        key, indexes = found
        index = indexes.get(address)
        return None if index is None else (key, index)

    async def pods_by_address(self, cluster: str) -> tuple[ServiceKey, dict[str, int]] | None:
        """The service behind ``cluster`` and its pods' indexes by "ip:port", if it is ours."""
        key = service_of(cluster)
        if key is None:
            return None
        try:
            pods = await self._manager.pods(key)  # cached: Envoy reports often, pods move rarely
        except UnknownService:
            return None
        # A pod without an address (its name does not resolve) is no host of Envoy's.
        return key, {pod.address: pod.index for pod in pods if pod.address is not None}


# How long a pod Envoy reports failing may take to answer a request before it counts as hung.
LIVENESS_PROBE_TIMEOUT_S = 0.5


class Liveness(Enum):
    GONE = "gone"  # refused or reset: nothing there can answer anyone
    ANSWERS = "answers"  # it answers (if only with errors): what it has, it answers at once
    SILENT = "silent"  # it answers nothing in time (or its connect hangs): hung, not gone


async def liveness(
    address: str, path: str, timeout_s: float = LIVENESS_PROBE_TIMEOUT_S
) -> Liveness:
    """One request to the pod at ``address`` ("host:port"), for ``path`` (its health check's):
    whether it is gone, answers, or is silent."""
    host, _, port = address.rpartition(":")
    request = f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            try:
                writer.write(request.encode())
                await writer.drain()
                first = await reader.read(1)
            finally:
                writer.close()
    except TimeoutError:
        return Liveness.SILENT
    except OSError:
        return Liveness.GONE
    return Liveness.ANSWERS if first else Liveness.GONE


# Envoy's word that a pod fails, as it reads when the pod is hung rather than gone.
_HUNG_FORM = {
    HealthSignal.EJECTED: HealthSignal.EJECTED_HUNG,
    HealthSignal.REQUESTS_FAILING: HealthSignal.REQUESTS_FAILING_HUNG,
}


async def deliver_signal(
    manager: StatefulRouteManager, locator: PodLocator, host: HostSignal
) -> None:
    """Hand one of Envoy's host signals to the manager, for the pod it names (if any).

    Envoy fails a pod whose connections fail and one whose requests time out alike; one
    request tells them apart: a pod that is silent is hung and keeps its users for the hang
    grace; one that is gone, or answers at once, fails over at once."""
    found = await locator.locate(host.cluster, host.address)
    if found is None:
        return
    key, index = found
    signal, reason = host.signal, host.reason
    if signal in _HUNG_FORM:
        path = (await manager.service(key)).settings.health_check.path
        if await liveness(host.address, path) is Liveness.SILENT:
            signal, reason = _HUNG_FORM[signal], f"{reason}; the pod answers nothing (hung)"
    try:
        await manager.signal_pod(key, index, signal, reason)
    except StatefulRouteError as exc:  # the pod left meanwhile
        log.info("envoy_signal_skipped service=%s pod=%d error=%s", key, index, exc.message)


class EventLogTail:
    """Follows a JSON-lines file Envoy appends to, from its end, surviving truncation."""

    def __init__(
        self,
        path: Path,
        parse: Callable[[str], HostSignal | None],
        manager: StatefulRouteManager,
        *,
        poll_s: float = 0.02,
    ) -> None:
        self.path = path
        self._parse = parse
        self._manager = manager
        self._locator = PodLocator(manager)
        self._poll_s = poll_s
        self._offset: int | None = None

    def read_new_lines(self) -> list[str]:
        """Lines appended since the last call (none on the first: history is not replayed)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self._offset = 0  # Envoy creates it on its first event: read all of that
            return []
        if self._offset is None or size < self._offset:
            self._offset = size if self._offset is None else 0
        if size == self._offset:
            return []
        with self.path.open("rb") as file:
            file.seek(self._offset)
            data = file.read(size - self._offset)
        complete = data[: data.rfind(b"\n") + 1]  # a half-written line waits for the next poll
        self._offset += len(complete)
        return complete.decode(errors="replace").splitlines()

    async def run(self) -> None:
        while True:
            try:
                for line in self.read_new_lines():
                    signal = self._parse(line)
                    if signal is not None:
                        await deliver_signal(self._manager, self._locator, signal)
            except Exception:  # Redis away for a moment: keep following the log
                log.exception("envoy_log_failed path=%s", self.path)
            await asyncio.sleep(self._poll_s)


class AdminStatsPoller:
    """Polls Envoys' ``/clusters`` for per-pod load (requests and connections in flight, and
    requests sent to the pod: every Envoy's counter, summed) and for ejections.

    An ejection is a change: a host an Envoy starts flagging (outlier detection, its own
    health check) is EJECTED, one it stops flagging UNEJECTED, as the event log would say.
    ``/clusters`` keeps the flag for the whole ejection time, so the flag itself is no news.
    ``admin_urls`` is asked each round: the Envoys connected now, as their nodes name them.
    """

    def __init__(
        self,
        admin_urls: Callable[[], list[str]],
        manager: StatefulRouteManager,
        *,
        poll_s: float = 2.0,
    ) -> None:
        self._urls = admin_urls
        self._manager = manager
        self._locator = PodLocator(manager)
        self._poll_s = poll_s
        self._last: dict[tuple[ServiceKey, int], tuple[int, int, int]] = {}
        # (admin url, cluster, address) -> the flags it was ejected for, while it is.
        self._ejected: dict[tuple[str, str, str], str] = {}

    async def poll_once(self, session: aiohttp.ClientSession) -> None:
        totals: dict[tuple[ServiceKey, int], list[int]] = {}
        urls = self._urls()
        for url in urls:
            try:
                async with session.get(f"{url.rstrip('/')}/clusters?format=json") as response:
                    clusters = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.info("envoy_stats_unreachable url=%s error=%r", url, exc)
                continue
            for host in parse_host_stats(clusters):
                await self._follow_ejection(url, host)
                found = await self._locator.locate(host.cluster, host.address)
                if found is None:
                    continue
                sums = totals.setdefault(found, [0, 0, 0])
                sums[0] += host.active_requests
                sums[1] += host.active_connections
                sums[2] += host.requests_total
        for (key, index), (requests, connections, total) in totals.items():
            if self._last.get((key, index)) == (requests, connections, total):
                continue  # unchanged: spare Redis the write
            self._last[key, index] = (requests, connections, total)
            load = LoadReport(
                active_requests=requests, active_connections=connections, requests_total=total
            )
            try:
                await self._manager.report_load(key, index, load)
            except StatefulRouteError as exc:
                log.info("envoy_load_skipped service=%s pod=%d error=%s", key, index, exc.message)
        polled = set(urls)  # an Envoy gone takes what it said with it
        self._ejected = {k: v for k, v in self._ejected.items() if k[0] in polled}

    async def _follow_ejection(self, url: str, host: HostStats) -> None:
        key = (url, host.cluster, host.address)
        before = self._ejected.get(key, "")
        if host.ejected_for == before:
            return
        if host.ejected_for:
            self._ejected[key] = host.ejected_for
            signal = HostSignal(
                host.cluster, host.address, HealthSignal.EJECTED, f"envoy {host.ejected_for}"
            )
        else:
            del self._ejected[key]
            signal = HostSignal(
                host.cluster, host.address, HealthSignal.UNEJECTED, "envoy un-ejected it"
            )
        await deliver_signal(self._manager, self._locator, signal)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(1.0, self._poll_s))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    await self.poll_once(session)
                except Exception:  # Redis away for a moment: poll again next round
                    log.exception("envoy_stats_failed")
                await asyncio.sleep(self._poll_s)
