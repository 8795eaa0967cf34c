"""REST-JSON discovery on aiohttp: ``POST /v3/discovery:{clusters,endpoints,listeners,routes,
scoped-routes}``.

Long-poll: a request whose version is current is held until the resources it names change,
then answered at once; after ``long_poll_hold_s`` it gets 304 (before Envoy's request_timeout).
REST carries neither nonce nor error detail, so a NACK shows only as the next request naming the
previous version: the subscription then holds requests until something new exists.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

from aiohttp import web
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from controlplane.xds import resources as res
from controlplane.xds.cache import SnapshotCache, SnapshotKey, View
from controlplane.xds.clients import ConnectedEnvoys, Transport
from controlplane.xds.config import XdsSettings
from controlplane.xds.envoy_version import EnvoyGate, shown_version
from controlplane.xds.identity import PeerCheck
from controlplane.xds.protocol import Node, Request, SotwSubscription, admin_url, node_group
from controlplane.xds.user_scopes import ScopeView

# Bodies up to this size go through the parse cache: Envoy's (~80 KB, one per subscription).
# Larger ones are parsed each time, so a client cannot pin cache-size x 4 MB of memory.
_MAX_CACHED_BODY = 256 * 1024

PATHS = {
    "/v3/discovery:clusters": res.CLUSTER,
    "/v3/discovery:endpoints": res.ENDPOINT,
    "/v3/discovery:listeners": res.LISTENER,
    "/v3/discovery:routes": res.ROUTE,
    "/v3/discovery:scoped-routes": res.SCOPED,
}


def _either(name: str, camel: str, default: Any) -> Any:
    """A field Envoy writes as ``name`` (proto field name), others perhaps as ``camel``."""
    return Field(default, validation_alias=AliasChoices(name, camel))


class _SemanticVersionBody(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    # proto3 JSON leaves zeros out.
    major_number: int = _either("major_number", "majorNumber", 0)
    minor_number: int = _either("minor_number", "minorNumber", 0)
    patch: int = 0


class _BuildVersionBody(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: _SemanticVersionBody | None = None


class _NodeBody(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = ""
    cluster: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    user_agent_name: str = _either("user_agent_name", "userAgentName", "")
    user_agent_build_version: _BuildVersionBody | None = _either(
        "user_agent_build_version", "userAgentBuildVersion", None
    )

    def to_node(self) -> Node:
        build = self.user_agent_build_version
        semantic = build.version if build else None
        return Node(
            self.id,
            self.cluster,
            self.metadata,
            self.user_agent_name,
            (semantic.major_number, semantic.minor_number, semantic.patch) if semantic else None,
        )


class _RequestBody(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    # Envoy writes proto field names; other clients may write the JSON (camelCase) names.
    version_info: str = Field("", validation_alias=AliasChoices("version_info", "versionInfo"))
    node: _NodeBody | None = None
    resource_names: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices("resource_names", "resourceNames")
    )
    type_url: str = Field("", validation_alias=AliasChoices("type_url", "typeUrl"))


def parse_request(body: bytes, type_url: str) -> Request:
    """A REST DiscoveryRequest; ValueError with a readable message when malformed."""
    try:
        parsed = _RequestBody.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValueError(f"malformed DiscoveryRequest: {where}: {first['msg']}") from None
    if parsed.type_url and parsed.type_url != type_url:
        raise ValueError(f"type_url {parsed.type_url!r} does not match this endpoint")
    node = parsed.node
    return Request(
        type_url=type_url,
        version_info=parsed.version_info,
        node=node.to_node() if node else None,
        resource_names=tuple(parsed.resource_names),
    )


@dataclass(slots=True)
class _Poller:
    """One REST subscription (node, type, names) and the request of it being held, if any."""

    subscription: SotwSubscription
    last_seen: float
    # A newer request of the same subscription replaces the held one (a restarted Envoy's, or a
    # retry after the client gave up): it counts up ``polls`` and wakes the held one to leave.
    polls: int = 0
    wake: asyncio.Event | None = None


class RestDiscovery:
    """The REST discovery endpoints, reading snapshots from the cache."""

    def __init__(
        self,
        cache: SnapshotCache,
        clients: ConnectedEnvoys,
        settings: XdsSettings,
        gate: EnvoyGate,
        peers: PeerCheck | None = None,
    ) -> None:
        self._cache = cache
        self._clients = clients
        self._settings = settings
        self._gate = gate
        self._peers = peers or PeerCheck(None)
        # Envoy sends the same ~77 KB body again and again: parse each distinct body once.
        self._parse = lru_cache(maxsize=settings.rest_parse_cache_size)(parse_request)
        self._pollers: dict[tuple[str, str, tuple[str, ...]], _Poller] = {}
        self._pruned_at = time.monotonic()

    def routes(self) -> list[web.RouteDef]:
        return [web.post(path, partial(self._discover, t)) for path, t in PATHS.items()]

    async def _discover(self, type_url: str, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        parse = self._parse if len(body) <= _MAX_CACHED_BODY else parse_request
        try:
            parsed = parse(body, type_url)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        node = parsed.node or Node()
        refusal = self._gate.admit(node)
        if refusal is not None:
            raise web.HTTPBadRequest(text=refusal)
        group = node_group(node, self._settings.node_group_key)
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        refusal = self._peers.refusal(peercert, node_ids={node.id}, group=group)
        if refusal is not None:
            raise web.HTTPForbidden(text=refusal)
        poller = self._poller(node.id, parsed)
        sub = poller.subscription
        where = admin_url(node, request.remote)
        client = self._clients.enter(node.id, group, Transport.REST, where, shown_version(node))
        try:
            reply = sub.on_poll(parsed)
            if reply is not None:
                self._clients.record(client, type_url, reply)
            view = await self._wait_until_due(SnapshotKey(group, res.SourceKind.REST), poller)
        finally:
            self._clients.leave(client)
        if view is None:
            return web.Response(status=304)
        sub.sent(view.version)
        self._clients.sent(type_url)
        return web.Response(body=view.rest_body(type_url), content_type="application/json")

    async def _wait_until_due(self, key: SnapshotKey, poller: _Poller) -> View | ScopeView | None:
        """The view to answer with, or None for 304 (hold over, replaced, or shutting down)."""
        sub = poller.subscription
        view = self._cache.snapshot(key).type(sub.type_url).view(sub.names)
        if sub.due(view.version):
            return view
        poll = poller.polls
        wake = poller.wake = asyncio.Event()
        unwatch = self._cache.watch(wake.set)
        try:
            async with asyncio.timeout(self._settings.long_poll_hold_s):
                while not self._cache.closed and poller.polls == poll:
                    view = self._cache.snapshot(key).type(sub.type_url).view(sub.names)
                    if sub.due(view.version):
                        return view
                    await wake.wait()
                    wake.clear()
        except TimeoutError:
            pass
        finally:
            unwatch()
        return None

    def _poller(self, node_id: str, request: Request) -> _Poller:
        key = (node_id, request.type_url, request.names)
        now = time.monotonic()
        found = self._pollers.get(key)
        if found is None:
            self._prune(now)
            found = self._pollers[key] = _Poller(SotwSubscription(request.type_url), now)
        else:
            found.polls += 1
            found.last_seen = now
            if found.wake is not None:
                found.wake.set()
        return found

    def _prune(self, now: float) -> None:
        # Envoys come and go (and EDS subscriptions with their clusters): forget idle ones.
        expiry = self._settings.rest_client_expiry_s
        if now - self._pruned_at < expiry:
            return
        self._pruned_at = now
        for key, poller in list(self._pollers.items()):
            if now - poller.last_seen > expiry + self._settings.long_poll_hold_s:
                del self._pollers[key]
