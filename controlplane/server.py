"""The control-plane process: owns start-up and shutdown of every listener and task it creates."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from controlplane.admin.app import create_admin_app
from controlplane.admin.config import is_loopback
from controlplane.admin.envoy_status import envoy_statuses
from controlplane.admin.metrics import AdminMetrics
from controlplane.callbacks import CallbackFuncs
from controlplane.discovery.resolver import Resolver, SystemResolver
from controlplane.discovery.watcher import PodNameWatcher
from controlplane.domain import FailoverEvent, FailoverType, Service, ServiceKey
from controlplane.domain.fleet_evidence import EvidenceRules
from controlplane.manager import StatefulRouteManager
from controlplane.misspath import MissPath
from controlplane.outage import RedisOutage, run_every
from controlplane.replicas import LeaderLease, ReplicaSync, new_replica_id
from controlplane.settings import Settings
from controlplane.signals.active_health import ActiveHealthChecker
from controlplane.signals.envoy_events import (
    AdminStatsPoller,
    EventLogTail,
    parse_health_event,
    parse_outlier_event,
)
from controlplane.signals.load_reports import FleetLoadSignals
from controlplane.store import Store
from controlplane.tasks import cancel_all
from controlplane.tls import ReloadingServerContext
from controlplane.xds.listeners import XdsListeners
from controlplane.xds.load_stats import LoadReporting
from controlplane.xds.server import XdsServer

log = logging.getLogger("stateful_route.server")


class Server:
    """Redis client, route manager, health checks, upkeep loops and HTTP listeners."""

    def __init__(self, settings: Settings, *, resolver: Resolver | None = None) -> None:
        """The whole assembly, in dependency order; ``start`` then runs it. ``resolver`` finds
        pods' addresses by name (the system's, as ``settings.discovery`` says, by default)."""
        self.settings = settings
        upkeep, listen = settings.upkeep, settings.listen
        # Redis, and this replica's place among the others.
        self.store = Store.from_settings(settings.redis)
        self.replica_id = new_replica_id()
        self.lease = LeaderLease(
            self.store.redis, self.store.keyspace, self.replica_id, ttl_s=upkeep.leader_lease_s
        )
        self.sync = ReplicaSync(self.store.redis, self.store.keyspace, self.replica_id)
        self.metrics = AdminMetrics()
        # The route manager, and who hears of its changes (the xDS server subscribes on start).
        callbacks = CallbackFuncs(
            service_changed=self.sync.announce_service,
            users_moved=self.sync.announce_moves,
            event_recorded=self._event_recorded,
        )
        discovery = settings.discovery
        resolver = resolver or SystemResolver(
            discovery.address_family, timeout_s=discovery.resolve_timeout_s
        )
        self.manager = StatefulRouteManager(
            self.store,
            view_ttl_s=upkeep.view_ttl_s,
            route_window_s=upkeep.route_window_s,
            callbacks=callbacks,
            is_leader=self.lease.is_leader,
            resolver=resolver,
            lease_drain_s=discovery.lease_drain_s,
        )
        # One WARNING when the background loops lose Redis, one INFO when it is back.
        self.outage = RedisOutage(self.store.redis.ping)
        # Pods' names resolved again (the leader alone resolves).
        self.names = PodNameWatcher(
            self.manager,
            resolver,
            every_s=discovery.resolve_every_s,
            failed_every_s=discovery.resolve_failed_every_s,
            outage=self.outage,
        )
        # Health signals in (the leader alone probes, as the manager's is_leader says).
        self.health = ActiveHealthChecker(self.manager, outage=self.outage)
        signals = settings.signals
        self.fleet = FleetLoadSignals(
            self.manager,
            EvidenceRules(signals.load_report_error_ratio, signals.load_report_min_errors),
            replica=self.replica_id,
            interval_s=signals.load_report_interval_s,
            clock=time.time,
        )
        # xDS and the miss path out.
        self.xds = XdsServer(self.manager, settings.xds, metrics=self.metrics)
        self.xds_listeners = XdsListeners(
            self.xds,
            host=listen.host,
            rest_port=listen.xds_rest_port,
            grpc_port=listen.xds_grpc_port,
            extra_routes=MissPath(self.manager, self.metrics, self.xds).routes(),
            extra_services=(
                [LoadReporting(self.fleet, signals.load_report_interval_s)]
                if signals.load_reports
                else []
            ),
        )
        # The admin API (served from start, after the xDS listeners).
        admin = settings.admin.for_listener(listen.host)
        self.admin_tls = ReloadingServerContext(admin.tls) if admin.tls is not None else None
        self.admin = create_admin_app(
            self.manager,
            admin,
            envoys_view=lambda: envoy_statuses(self.xds.envoys(), self.xds.cache),
            metrics=self.metrics,
        )
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.admin_port = 0

    async def start(self) -> None:
        follow = self.sync.listen_forever(self.manager.apply_remote)
        self._tasks.append(asyncio.create_task(follow, name="replica-listen"))
        self._tasks.append(asyncio.create_task(self.sync.publish_forever(), name="replica-publish"))
        await self.lease.try_acquire()
        self._tasks.append(asyncio.create_task(self.lease.run(), name="leader-lease"))
        await self._register_configured_services()
        await self.manager.router.load_routes()
        listen = self.settings.listen
        # xDS first: Envoy must find the restored routes before anything else changes them.
        await self.xds_listeners.start()
        self._warn_if_exposed()
        self.admin_port = await self._serve(self.admin, listen.host, listen.admin_port)
        if self.admin_tls is not None:
            reload = self.admin_tls.watch()
            self._tasks.append(asyncio.create_task(reload, name="admin-tls-reload"))
        if self.settings.upkeep.health_checks:
            await self.health.start()
        upkeep, router = self.settings.upkeep, self.manager.router
        self._every(upkeep.last_seen_flush_s, router.flush_last_seen, "flush-last-seen")
        expire_idle = self._as_leader(router.expire_idle)
        self._every(upkeep.idle_expiry_every_s, expire_idle, "expire-idle")
        reconcile = self._as_leader(self.manager.failover.reconcile)
        self._every(upkeep.reconcile_every_s, reconcile, "reconcile")
        discovery = self.settings.discovery
        leases = self._as_leader(self.manager.leases.check_all)
        self._every(discovery.lease_check_every_s, leases, "check-leases")
        self._every(upkeep.route_expiry_every_s, self._expire_routes, "expire-routes")
        self._every(upkeep.replay_binds_every_s, router.replay_pending_binds, "replay-binds")
        self._follow_envoy()
        signals = self.settings.signals
        if signals.load_reports:
            self._every(signals.load_report_interval_s, self.fleet.publish_load, "envoy-load")
        self._tasks.append(asyncio.create_task(self.names.run(), name="resolve-names"))
        xds = self.xds_listeners
        log.info(
            "started admin=%s://%s:%d xds_rest=%d xds_grpc=%d xds_tls=%s",
            "http" if self.admin_tls is None else "https", listen.host, self.admin_port,
            xds.rest_port, xds.grpc_port, self.settings.xds.tls is not None,
        )  # fmt: skip

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        await self.health.stop()
        await self.outage.close()
        for runner in reversed(self._runners):
            await runner.cleanup()
        await self.xds_listeners.stop()
        await self.manager.close()
        await self.lease.release()
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
            # At once: a pod's name may take up to the resolver's timeout to answer.
            await asyncio.gather(
                *(self.manager.upsert_pod(service.key, pod.to_pod()) for pod in config.pods)
            )

    def _warn_if_exposed(self) -> None:
        """Say so once when a listener beyond loopback has no protection of its own."""
        settings, host = self.settings, self.settings.listen.host
        if is_loopback(host):
            return
        if settings.admin.token is None:
            log.warning("admin_api_open host=%s: no token, anyone reaching it may write", host)
        if settings.admin.tls is None:
            log.warning("admin_api_plain host=%s: tokens cross the network in clear text", host)
        if settings.xds.tls is None:
            log.warning("xds_plain host=%s: anyone reaching xDS reads every route and user", host)

    async def _serve(self, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        tls = self.admin_tls.context if self.admin_tls is not None else None
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        await site.start()
        self._runners.append(runner)
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", ())
        return int(sockets[0].getsockname()[1]) if sockets else port

    def _follow_envoy(self) -> None:
        signals = self.settings.signals
        logs = [
            (signals.outlier_event_log, parse_outlier_event, "outlier-log"),
            (signals.health_event_log, parse_health_event, "health-event-log"),
        ]
        for path, parse, name in logs:
            if path is not None:
                tail = EventLogTail(path, parse, self.manager, poll_s=signals.log_poll_s)
                self._tasks.append(asyncio.create_task(tail.run(), name=name))
        if signals.envoy_admin_urls or signals.poll_discovered_envoys:
            poller = AdminStatsPoller(
                self._envoy_admin_urls, self.manager, poll_s=signals.stats_poll_s
            )
            self._tasks.append(asyncio.create_task(poller.run(), name="envoy-stats"))

    def _envoy_admin_urls(self) -> list[str]:
        """The Envoy admin APIs to poll: the configured ones and, if allowed, those the
        connected Envoys name."""
        signals = self.settings.signals
        found = self.xds.clients.admin_urls() if signals.poll_discovered_envoys else []
        return list(dict.fromkeys([*signals.envoy_admin_urls, *found]))

    def _event_recorded(self, event: FailoverEvent) -> None:
        self.metrics.record_event(event)
        if event.type is FailoverType.POD_FAILURE:  # it may be back under its name elsewhere
            self.names.pod_failed(ServiceKey(event.namespace, event.service), event.pod)

    def _as_leader(self, job: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[object]]:
        """``job`` on the leader only; the other replicas skip their turn."""

        async def gated() -> object:
            return await job() if self.manager.is_leader() else None

        return gated

    async def _expire_routes(self) -> None:
        self.manager.router.expire_routes()

    def _every(self, interval_s: float, job: Callable[[], Awaitable[object]], name: str) -> None:
        loop = run_every(interval_s, job, name, self.outage)
        self._tasks.append(asyncio.create_task(loop, name=name))
