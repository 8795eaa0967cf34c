"""The miss path: Envoy asks (ext_authz, HTTP) where a user it has no route for must go.

Envoy sends the check only for users missing from its routes; the answer names the pod in the
session header that Envoy's stateful_session filter reads, so this very request already lands
on the user's pod while the route push is in flight. The service comes in a header that the
service's fallback route sets (and that Envoy strips from client requests before routing).
"""

from __future__ import annotations

import base64
import logging

from aiohttp import web
from redis.exceptions import RedisError

from controlplane.admin.metrics import AdminMetrics
from controlplane.domain import RouteRequest, ServiceKey, parse
from controlplane.errors import InvalidInput, NoHealthyPods, StoreUnavailable, UnknownService
from controlplane.manager import StatefulRouteManager
from controlplane.xds.naming import MISS_PATH_PREFIX, SERVICE_HEADER, SESSION_HEADER

log = logging.getLogger("stateful_route.misspath")


def session_value(address: str) -> str:
    return base64.b64encode(address.encode()).decode()


class MissPath:
    """The ext_authz check endpoint, served on the control plane's xDS HTTP listener."""

    def __init__(self, manager: StatefulRouteManager, metrics: AdminMetrics) -> None:
        self._manager = manager
        self._metrics = metrics

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", MISS_PATH_PREFIX + "{tail:.*}", self.check)]

    async def check(self, request: web.Request) -> web.Response:
        service = request.headers.get(SERVICE_HEADER, "")
        namespace, _, name = service.partition("/")
        try:
            key = ServiceKey.of(namespace, name)
            settings = (await self._manager.service(key)).settings
        except (InvalidInput, UnknownService):
            # Not one of ours (an old route config?): let Envoy balance it as it likes.
            return web.Response(status=200)
        except RedisError:
            return web.Response(status=503, text="redis is unreachable and the service unknown")
        uid = request.headers.get(settings.uid_header)
        if uid is None:
            return web.Response(status=200)  # no user: nothing to keep sticky
        try:
            route = parse(RouteRequest, {"namespace": namespace, "service": name, "uid": uid})
            result = await self._metrics.timed_route(self._manager.route_request, route)
        except InvalidInput as exc:
            return web.Response(status=400, text=f"invalid {settings.uid_header}: {exc}")
        except (NoHealthyPods, StoreUnavailable) as exc:
            # Envoy's failure_mode_allow then lets its own balancer place the request.
            return web.Response(status=503, text=exc.message)
        return web.Response(status=200, headers={SESSION_HEADER: session_value(result.address)})
