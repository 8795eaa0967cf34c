"""The control plane's own active health checks: GET <pod>/health on each service's interval."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from controlplane.domain import HealthReport, Pod, ServiceKey
from controlplane.errors import StatefulRouteError, UnknownService
from controlplane.manager import StatefulRouteManager
from controlplane.outage import UNREACHABLE, RedisOutage
from controlplane.tasks import cancel_all

log = logging.getLogger("stateful_route.health")


async def probe(
    session: aiohttp.ClientSession, pod: Pod, path: str, timeout_s: float
) -> HealthReport:
    """One check: healthy when the pod answers 2xx within the timeout."""
    if pod.address is None:  # keeps the reason its name gave (a failed pod keeps its reason)
        return HealthReport(is_healthy=False, reason=f"no address: name {pod.name} unresolved")
    started = time.perf_counter()
    try:
        async with session.get(
            f"http://{pod.address}{path}", timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as response:
            elapsed_ms = (time.perf_counter() - started) * 1000
            healthy = 200 <= response.status < 300
            return HealthReport(
                is_healthy=healthy,
                response_time_ms=elapsed_ms,
                reason="" if healthy else f"health check answered {response.status}",
            )
    except TimeoutError:
        # Also a connect that timed out: a host gone from the network may come back and
        # answer what it had received, so it is treated as hung, not gone.
        return HealthReport(
            is_healthy=False, timed_out=True, reason=f"health check timed out after {timeout_s}s"
        )
    except aiohttp.ClientError as exc:
        return HealthReport(
            is_healthy=False, reason=f"health check failed: {exc.__class__.__name__}"
        )


class ActiveHealthChecker:
    """Checks every pod of every service; one task per service, owned and cancelled here."""

    def __init__(
        self,
        manager: StatefulRouteManager,
        *,
        rescan_s: float = 5.0,
        outage: RedisOutage | None = None,
    ) -> None:
        self._manager = manager
        # Where a round that cannot reach Redis is reported (shared with the upkeep loops).
        self._outage = outage or RedisOutage(manager.store.redis.ping)
        self._own_outage = outage is None
        # Among replicas, only the leader probes: one verdict per check, not one per replica.
        self._is_leader = manager.is_leader
        self._rescan_s = rescan_s
        self._tasks: dict[ServiceKey, asyncio.Task[None]] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._supervisor = asyncio.create_task(self._supervise(), name="health-supervisor")

    async def stop(self) -> None:
        await cancel_all([*self._tasks.values(), *([self._supervisor] if self._supervisor else [])])
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
        if self._own_outage:
            await self._outage.close()

    async def check_service(self, key: ServiceKey) -> None:
        """Check every pod of one service once, concurrently."""
        assert self._session is not None
        state = await self._manager.service_state(key)
        if state is None:
            return
        settings = state.service.settings.health_check
        reports = await asyncio.gather(
            *(probe(self._session, pod, settings.path, settings.timeout_s) for pod in state.pods)
        )
        for pod, report in zip(state.pods, reports, strict=True):
            try:
                await self._manager.update_pod_health(key, pod.index, report)
            except StatefulRouteError as exc:  # the pod was removed meanwhile
                log.info("health_skip service=%s pod=%d error=%s", key, pod.index, exc.message)

    async def _supervise(self) -> None:
        while True:
            try:
                keys = set(await self._manager.store.registry.service_keys())
            except UNREACHABLE as exc:  # keep checking the services we know
                self._outage.failed("health_rescan", exc)
                keys = set(self._tasks)
            except Exception:
                log.exception("health_rescan_failed")
                keys = set(self._tasks)
            for key in keys - self._tasks.keys():
                self._tasks[key] = asyncio.create_task(self._loop(key), name=f"health-{key}")
            for key in self._tasks.keys() - keys:
                self._tasks.pop(key).cancel()
            await asyncio.sleep(self._rescan_s)

    async def _loop(self, key: ServiceKey) -> None:
        interval = 1.0
        while True:
            try:
                try:
                    service = await self._manager.service(key)  # cached; check_service reloads
                except UnknownService:
                    return
                interval = service.settings.health_check.interval_s
                # With Redis away no verdict can be written: probe again once it is back.
                if self._is_leader() and not self._outage.unreachable:
                    await self.check_service(key)
            except UNREACHABLE as exc:
                self._outage.failed(f"health_round service={key}", exc)
            except Exception:  # one bad round must not end the checks of a service
                log.exception("health_round_failed service=%s", key)
            await asyncio.sleep(interval)
