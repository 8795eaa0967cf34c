"""The xDS server: owns the snapshot cache, keeps it in step with the state source, and hands
the REST routes and the ADS service to the aiohttp app and grpclib server that carry them."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from pydantic import ValidationError

from controlplane.domain import ServiceKey
from controlplane.errors import StatefulRouteError
from controlplane.tasks import cancel_all
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.clients import ConnectedEnvoys, EnvoyView, XdsObserver
from controlplane.xds.config import XdsSettings
from controlplane.xds.envoy_version import MINIMUM_ENVOY, EnvoyGate, EnvoyVersion
from controlplane.xds.grpc import AggregatedDiscovery
from controlplane.xds.identity import PeerCheck
from controlplane.xds.rest import RestDiscovery
from controlplane.xds.source import StateSource

log = logging.getLogger(__name__)

_RETRY_S = 0.5
# Envoy 1.40's cost of one scoped-RDS update per scope it holds (it copies its scope index).
_ENVOY_SECONDS_PER_SCOPE = 25e-9


class XdsServer:
    """Start with ``start()``, stop with ``stop()``; serve ``routes()`` and ``ads`` meanwhile."""

    def __init__(
        self,
        source: StateSource,
        settings: XdsSettings | None = None,
        *,
        metrics: XdsObserver | None = None,
        minimum_envoy: EnvoyVersion = MINIMUM_ENVOY,
    ) -> None:
        self.settings = settings or XdsSettings()
        self.source = source
        self.cache = SnapshotCache(self.settings, source.sticky.routes)
        self.clients = ConnectedEnvoys(self.settings.rest_client_expiry_s, observer=metrics)
        # Envoys too old for what the cache holds are refused at their first request; with
        # xds.tls, a client certificate may speak only for the node it names.
        gate = EnvoyGate(minimum_envoy)
        self.peers = PeerCheck(self.settings.tls)
        self.rest = RestDiscovery(self.cache, self.clients, self.settings, gate, self.peers)
        self.ads = AggregatedDiscovery(self.cache, self.clients, self.settings, gate, self.peers)
        self._pending: set[ServiceKey] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_build = 0.0
        self._scope_push: asyncio.TimerHandle | None = None
        self._last_scope_push = 0.0

    async def start(self) -> None:
        # Listen first: a change racing the full build is then fetched again, never lost.
        self.source.subscribe(self._changed)
        # A user's scope changes at once, with no rebuild: O(1) per arrival; pushed paced.
        self.source.sticky.observer = self.cache.user_changed
        self.cache.scopes_changed = self._scopes_changed
        self.cache.replace_all(await self.source.service_states())
        self._task = asyncio.create_task(self._apply_changes(), name="xds-apply-changes")

    async def stop(self) -> None:
        """Stop following changes and release every held request and open stream."""
        if self._scope_push is not None:
            self._scope_push.cancel()
            self._scope_push = None
        if self._task is not None:
            await cancel_all([self._task])
            self._task = None
        self.cache.close()

    def routes(self) -> list[web.RouteDef]:
        """The REST discovery routes, for the control plane's aiohttp app."""
        return self.rest.routes()

    async def scope_for(
        self, group: str, service: ServiceKey, uid: str, timeout_s: float
    ) -> tuple[str, bool] | None:
        """The key of a scope that routes ``uid`` to its pod (its placement's), once every
        Envoy of the group holds it, and whether they all did within ``timeout_s``; None if no
        Envoy of the group ever asked this control plane for anything."""
        found = self.cache.placement_scope(group, service, uid)
        if found is None:
            return None
        key, revision = found
        return key, await self.clients.scopes_live(group, revision, timeout_s)

    def envoys(self) -> list[EnvoyView]:
        """The connected Envoys, for the admin API."""
        return self.clients.views()

    def _scopes_changed(self) -> None:
        """Push users' scope changes, at most once per interval: every push costs each Envoy a
        copy of its scope index (about 25 ns per scope on Envoy 1.40), so the interval grows
        with the scopes to keep that within ``scope_push_cpu_share`` of Envoy's main thread."""
        if self._scope_push is not None:
            return  # one is on its way and will carry this change too
        loop = asyncio.get_running_loop()
        settings = self.settings
        interval = max(
            settings.scope_push_min_interval_s,
            self.cache.users.most() * _ENVOY_SECONDS_PER_SCOPE / settings.scope_push_cpu_share,
        )
        delay = self._last_scope_push + interval - loop.time()
        if delay <= 0:
            self._push_scopes()
        else:
            self._scope_push = loop.call_later(delay, self._push_scopes)

    def _push_scopes(self) -> None:
        self._scope_push = None
        self._last_scope_push = asyncio.get_running_loop().time()
        self.cache.flush_scopes()

    def _changed(self, key: ServiceKey) -> None:
        if self._task is not None:
            self._pending.add(key)
            self.cache.service_told(key)
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
            told = self.cache.changes.told
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
            self.cache.caught_up(told)
