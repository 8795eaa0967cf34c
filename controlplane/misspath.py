"""The miss path: Envoy asks where a user it holds no scope for must go.

Envoy's Lua filter (``xds/misspath.lua``) runs only for a request that found no route, i.e. a
user with no scope in that Envoy yet. It names the service, the uid and its node group; the
control plane places the user (its binding from Redis, or a new pod by the service's strategy),
which puts the user in the sticky table and so its scope in every Envoy of the group (pushed
within ``xds.scope_push_*``). The answer names the scope of the user's *placement* (its pods),
which the group's Envoys hold since that placement's first user: the filter selects it and
this very request lands on the user's pod, with no wait for the user's own scope. Only for a
placement's first user does the answer wait until the group's Envoys acknowledged it.

The route of a failed pod's users (while their scopes still name it) asks too, with
``MOVED_HEADER``: then only a user its pod's failover has already moved gets an answer (the
scope of its new pod); one still bound to the failed pod gets 503, and its request too.

A new user past its service's ``NewUserLimits`` is not placed: the answer (503) makes the
filter select the balanced route, or (429, ``over_limit: reject``) answer 429 itself.

With ``xds.tls`` the endpoint shares the xDS listener's mutual TLS: a caller without a client
certificate of the CA never gets a request in, and one whose certificate does not name the
group it claims (``client_identity``) is answered 403 before anything is bound.
"""

from __future__ import annotations

import logging

from aiohttp import web

from controlplane.admin.metrics import AdminMetrics
from controlplane.domain import OverLimit, RouteRequest, ServiceKey, parse
from controlplane.errors import (
    InvalidInput,
    NewUsersLimited,
    NoHealthyPods,
    StoreUnavailable,
    UnknownService,
)
from controlplane.manager import StatefulRouteManager
from controlplane.xds.naming import (
    GROUP_HEADER,
    MISS_PATH,
    MOVED_HEADER,
    SCOPE_KEY_HEADER,
    SERVICE_HEADER,
    UID_HEADER,
)
from controlplane.xds.server import XdsServer

log = logging.getLogger("stateful_route.misspath")

# How long an answer waits for the group's Envoys to acknowledge the user's scope. An Envoy
# slower than that (or one that rejects the scope) costs the request a second ask, then a
# balanced route: the filter checks that the scope it selects is there.
SCOPE_WAIT_S = 0.5


class MissPath:
    """The miss path endpoint, served on the control plane's xDS HTTP listener."""

    def __init__(
        self, manager: StatefulRouteManager, metrics: AdminMetrics, xds: XdsServer
    ) -> None:
        self._manager = manager
        self._metrics = metrics
        self._xds = xds

    def routes(self) -> list[web.RouteDef]:
        return [web.post(MISS_PATH, self.place)]

    async def place(self, request: web.Request) -> web.Response:
        namespace, _, name = request.headers.get(SERVICE_HEADER, "").partition("/")
        uid = request.headers.get(UID_HEADER, "")
        group = request.headers.get(GROUP_HEADER, "")
        refusal = self._xds.peers.refusal(
            request.transport.get_extra_info("peercert") if request.transport else None,
            node_ids=self._xds.clients.node_ids(group),
            group=group,
        )
        if refusal is not None:
            return web.Response(status=403, text=refusal)
        moved = request.headers.get(MOVED_HEADER) == "1"
        try:
            route = parse(RouteRequest, {"namespace": namespace, "service": name, "uid": uid})
            if not moved:
                await self._metrics.timed_route(self._manager.route_request, route)
            elif await self._manager.bound_route(route) is None:
                # Its pod's failover has not moved it yet: Envoy's 503 stands meanwhile.
                return web.Response(status=503, text=f"user {uid!r} is not moved yet")
        except InvalidInput as exc:
            return web.Response(status=400, text=f"invalid request: {exc}")
        except UnknownService as exc:
            return web.Response(status=404, text=exc.message)
        except NewUsersLimited as exc:
            # The filter answers 429 itself, or (503) selects the balanced route.
            reject = exc.detail["over_limit"] == OverLimit.REJECT
            return web.Response(status=429 if reject else 503, text=exc.message)
        except (NoHealthyPods, StoreUnavailable) as exc:
            # The filter then selects the balanced route: Envoy places the request itself.
            return web.Response(status=503, text=exc.message)
        key = ServiceKey(route.namespace, route.service_name)
        found = await self._xds.scope_for(group, key, uid, SCOPE_WAIT_S)
        if found is None:  # no Envoy of that group here: none it could select
            return web.Response(status=503, text=f"no Envoy of node group {group!r} here")
        scope, live = found
        if not live:
            log.warning("scope_not_acknowledged group=%r service=%s", group, key)
        return web.Response(status=200, headers={SCOPE_KEY_HEADER: scope})
