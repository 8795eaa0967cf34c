"""The admin API's aiohttp application: routes, token checks, error mapping, metrics."""

from __future__ import annotations

from aiohttp import web

from controlplane.admin.config import AdminSettings
from controlplane.admin.errors import error_middleware
from controlplane.admin.handlers import CONTEXT, AdminContext, EnvoysView
from controlplane.admin.metrics import AdminMetrics
from controlplane.admin.openapi import build_openapi, openapi_json, render_html
from controlplane.admin.routes import add_routes
from controlplane.manager import StatefulRouteManager


def create_admin_app(
    manager: StatefulRouteManager,
    settings: AdminSettings,
    *,
    envoys_view: EnvoysView | None = None,
    metrics: AdminMetrics | None = None,
) -> web.Application:
    """The admin API over ``manager``.

    ``envoys_view`` lists the Envoys connected to the xDS server (sync or async callable).
    ``metrics`` is shared with the xDS server when given (it counts pushes/ACKs/NACKs there);
    else the app makes its own. Either way it is ``app[CONTEXT].metrics``; it counts failover
    events when the manager was built with ``metrics.record_event`` among its callbacks (as
    ``server.py`` does). The caller owns the manager: the app neither starts nor closes it.
    """
    metrics = metrics or AdminMetrics()
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[error_middleware(metrics.redis_errors.inc)],
    )
    app[CONTEXT] = AdminContext(
        manager=manager,
        metrics=metrics,
        envoys_view=envoys_view,
        openapi_json=openapi_json(),
        docs_html=render_html(build_openapi()),
    )
    add_routes(app, settings)
    return app
