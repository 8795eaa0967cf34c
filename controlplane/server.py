"""The control-plane process: owns start-up and shutdown of every listener and task it creates."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from controlplane.admin.app import create_admin_app
from controlplane.domain import Service
from controlplane.manager import StatefulRouteManager
from controlplane.settings import Settings
from controlplane.signals.active_health import ActiveHealthChecker
from controlplane.store import Store

log = logging.getLogger("stateful_route.server")


class Server:
    """Redis client, route manager, health checks, upkeep loops and HTTP listeners."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store.from_url(
            settings.redis.url, prefix=settings.redis.prefix, history_cap=settings.redis.history_cap
        )
        self.manager = StatefulRouteManager(self.store, view_ttl_s=settings.upkeep.view_ttl_s)
        self.health = ActiveHealthChecker(self.manager)
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.admin_port = 0

    async def start(self) -> None:
        await self._register_configured_services()
        listen = self.settings.listen
        admin = create_admin_app(self.manager, self.settings.admin)
        self.admin_port = await self._serve(admin, listen.host, listen.admin_port)
        if self.settings.upkeep.health_checks:
            await self.health.start()
        upkeep = self.settings.upkeep
        self._every(upkeep.last_seen_flush_s, self.manager.flush_last_seen, "flush-last-seen")
        self._every(upkeep.idle_expiry_every_s, self.manager.expire_idle, "expire-idle")
        log.info("started admin=http://%s:%d", listen.host, self.admin_port)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.health.stop()
        for runner in reversed(self._runners):
            await runner.cleanup()
        await self.manager.close()
        await self.store.close()

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def _register_configured_services(self) -> None:
        for config in self.settings.services:
            service = Service(
                namespace=config.namespace, name=config.name, settings=config.settings
            )
            await self.manager.register_service(service)
            for pod in config.pods:
                await self.manager.upsert_pod(config.namespace, config.name, pod)

    async def _serve(self, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runners.append(runner)
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", ())
        return int(sockets[0].getsockname()[1]) if sockets else port

    def _every(self, interval_s: float, job: Callable[[], Awaitable[object]], name: str) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await job()
                except Exception:  # Redis may be away for a while: try again next round
                    log.exception("upkeep_failed job=%s", name)

        self._tasks.append(asyncio.create_task(loop(), name=name))
