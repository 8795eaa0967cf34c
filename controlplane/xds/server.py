"""The xDS server: owns the snapshot cache, keeps it in step with the state source, and hands
the REST routes and the ADS service to the aiohttp app and grpclib server that carry them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from pydantic import ValidationError

from controlplane.domain import ServiceKey
from controlplane.errors import StatefulRouteError
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.clients import ConnectedEnvoys, EnvoyView, XdsObserver
from controlplane.xds.config import XdsSettings
from controlplane.xds.grpc import AggregatedDiscovery
from controlplane.xds.rest import RestDiscovery
from controlplane.xds.source import StateSource

log = logging.getLogger(__name__)

_RETRY_S = 0.5


class XdsServer:
    """Start with ``start()``, stop with ``stop()``; serve ``routes()`` and ``ads`` meanwhile."""

    def __init__(
        self,
        source: StateSource,
        settings: XdsSettings | None = None,
        *,
        metrics: XdsObserver | None = None,
    ) -> None:
        self.settings = settings or XdsSettings()
        self.source = source
        self.cache = SnapshotCache(self.settings, source.sticky.routes)
        self.clients = ConnectedEnvoys(self.settings.rest_client_expiry_s, observer=metrics)
        self.rest = RestDiscovery(self.cache, self.clients, self.settings)
        self.ads = AggregatedDiscovery(self.cache, self.clients, self.settings)
        self._pending: set[ServiceKey] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_build = 0.0

    async def start(self) -> None:
        # Listen first: a change racing the full build is then fetched again, never lost.
        self.source.add_listener(self._changed)
        # A user's scope changes at once, with no rebuild: O(1) per arrival.
        self.source.sticky.observer = self.cache.user_changed
        self.cache.replace_all(await self.source.service_states())
        self._task = asyncio.create_task(self._apply_changes(), name="xds-apply-changes")

    async def stop(self) -> None:
        """Stop following changes and release every held request and open stream."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.cache.close()

    def routes(self) -> list[web.RouteDef]:
        """The REST discovery routes, for the control plane's aiohttp app."""
        return self.rest.routes()

    async def scopes_live(self, group: str, timeout_s: float) -> bool:
        """Wait until the group's Envoys hold every scope the cache has now (the miss path's
        answer must not overtake the user's scope); False after ``timeout_s``."""
        revision = self.cache.scope_revision(group)
        return await self.clients.scopes_live(group, revision, timeout_s)

    def envoys(self) -> list[EnvoyView]:
        """The connected Envoys, for the admin API."""
        return self.clients.views()

    def _changed(self, key: ServiceKey) -> None:
        if self._task is not None:
            self._pending.add(key)
            self._wake.set()

    async def _apply_changes(self) -> None:
        while True:
            await self._wake.wait()
            # Changes arriving within the debounce window become one snapshot; under a stream
            # of changes (new users on the miss path) snapshots come at most every
            # min_rebuild_interval_s, so rebuilds never crowd out the requests they serve.
            loop = asyncio.get_running_loop()
            since_last = loop.time() - self._last_build
            await asyncio.sleep(
                max(self.settings.debounce_s, self.settings.min_rebuild_interval_s - since_last)
            )
            self._wake.clear()
            keys, self._pending = sorted(self._pending), set()
            try:
                states = await asyncio.gather(*(self.source.service_state(k) for k in keys))
            except Exception as exc:  # the source's store is away: try these again shortly
                log.warning(
                    "xds state unavailable services=%s error=%r", [str(k) for k in keys], exc
                )
                self._pending.update(keys)
                self._wake.set()
                await asyncio.sleep(_RETRY_S)
                continue
            self._last_build = loop.time()
            try:
                self.cache.update(dict(zip(keys, states, strict=True)))
            except (StatefulRouteError, ValidationError, ValueError) as exc:
                # Keep serving the last good snapshot; the next change tries again.
                log.error("xds rebuild failed services=%s error=%r", [str(k) for k in keys], exc)
