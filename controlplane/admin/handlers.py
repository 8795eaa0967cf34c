"""The admin API's request handlers: parse (bodies.py), call the manager, serialize.

Handlers hold no state; what they need is the app's AdminContext. Errors are not handled
here: they propagate to the one mapping in errors.py.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import hdrs, web
from pydantic import BaseModel

from controlplane.admin.bodies import (
    json_response,
    pod_index,
    query_choice,
    query_int,
    read_body,
    service_key,
    uid,
)
from controlplane.admin.metrics import AdminMetrics
from controlplane.admin.models import (
    MAX_POD_INDEX,
    BindingView,
    DrainAction,
    Health,
    Lease,
    LeaseRequest,
    Migration,
    PodAction,
    PodChange,
    PodRemoval,
    PodSpec,
    PodUsers,
    RecoverAction,
)
from controlplane.domain import (
    FailoverEvent,
    FailoverType,
    LoadReport,
    PodStatus,
    RouteRequest,
    Service,
    ServiceKey,
    ServiceSettings,
)
from controlplane.errors import UnknownPod
from controlplane.manager import StatefulRouteManager

EnvoyInfo = Mapping[str, object] | BaseModel
# Lists the Envoys connected to the xDS server; may be sync or async.
EnvoysView = Callable[[], Iterable[EnvoyInfo] | Awaitable[Iterable[EnvoyInfo]]]

MAX_HISTORY_LIMIT = 1000
MAX_PAGE_LIMIT = 10_000
DEFAULT_PAGE_LIMIT = 100
# SSCAN cursors are unsigned 64-bit; query_int takes up to 18 digits, below 2**63.
MAX_CURSOR = 10**18 - 1


@dataclass(frozen=True, slots=True)
class AdminContext:
    """What the handlers of one app work with."""

    manager: StatefulRouteManager
    metrics: AdminMetrics
    envoys_view: EnvoysView | None
    openapi_json: bytes
    docs_html: str


CONTEXT = web.AppKey("stateful_route_admin", AdminContext)


def _context(request: web.Request) -> AdminContext:
    return request.app[CONTEXT]


# -- health, metrics and self-description ----------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """200 ``ok`` while Redis answers, else 503 ``degraded``: without Redis a replica still
    routes (known users keep their pod, new ones are placed by hashing) but can record and
    move nobody. ``leader`` says whether this replica holds the leader lease."""
    context = _context(request)
    redis = await context.manager.store.ping()
    if not redis:
        context.metrics.redis_errors.inc()
    leader = context.manager.is_leader()
    health = Health(status="ok" if redis else "degraded", redis=redis, leader=leader)
    return json_response(health, status=200 if redis else 503)


async def metrics(request: web.Request) -> web.Response:
    context = _context(request)
    await context.metrics.refresh_bound_users(context.manager)
    body, content_type = context.metrics.render(request.headers.get(hdrs.ACCEPT, ""))
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_context(request).openapi_json, content_type="application/json")


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=_context(request).docs_html, content_type="text/html")


async def envoys(request: web.Request) -> web.Response:
    view = _context(request).envoys_view
    if view is None:
        return json_response([])
    found = view()
    if inspect.isawaitable(found):
        found = await found
    return json_response(list(found))


# -- services --------------------------------------------------------------------------------


async def list_services(request: web.Request) -> web.Response:
    return json_response(await _context(request).manager.services())


async def put_service(request: web.Request) -> web.Response:
    key = service_key(request)
    settings = await read_body(request, ServiceSettings, optional=True)
    service = Service(namespace=key.namespace, name=key.name, settings=settings)
    return json_response(await _context(request).manager.register_service(service))


async def delete_service(request: web.Request) -> web.Response:
    await _context(request).manager.delete_service(service_key(request))
    return web.Response(status=204)


async def failovers(request: web.Request) -> web.Response:
    key = service_key(request)
    limit = query_int(request, "limit", minimum=1, maximum=MAX_HISTORY_LIMIT)
    pod = query_int(request, "pod", minimum=0, maximum=MAX_POD_INDEX)
    kind = query_choice(request, "type", FailoverType)
    history = await _context(request).manager.get_failover_history(key, limit, pod=pod, kind=kind)
    return json_response(history)


# -- pods ------------------------------------------------------------------------------------


async def list_pods(request: web.Request) -> web.Response:
    status = await _context(request).manager.get_service_load_status(service_key(request))
    return json_response(list(status.values()))


async def pod_users(request: web.Request) -> web.Response:
    key, index = service_key(request), pod_index(request)
    cursor = query_int(request, "cursor", minimum=0, maximum=MAX_CURSOR) or 0
    limit = query_int(request, "limit", minimum=1, maximum=MAX_PAGE_LIMIT) or DEFAULT_PAGE_LIMIT
    page = await _context(request).manager.users_on_pod(key, index, cursor=cursor, limit=limit)
    return json_response(PodUsers.of(page))


async def put_pod(request: web.Request) -> web.Response:
    key = service_key(request)
    spec = await read_body(request, PodSpec)
    manager = _context(request).manager
    pod = await manager.upsert_pod(key, spec.to_pod())
    return json_response(await _pod_status(manager, key, pod.index))


async def delete_pod(request: web.Request) -> web.Response:
    key, index = service_key(request), pod_index(request)
    context = _context(request)
    event = await context.manager.remove_pod(key, index)
    return json_response(PodRemoval(pod_index=index, failover=event))


async def register_lease(request: web.Request) -> web.Response:
    key = service_key(request)
    body = await read_body(request, LeaseRequest)
    index = body.known_index
    manager = _context(request).manager
    pod, ends_at = await manager.leases.register(
        key, body.to_pod(index or 0), body.ttl_s, assign_index=index is None
    )
    status = await _pod_status(manager, key, pod.index)
    lease = Lease(pod_index=pod.index, ttl_s=body.ttl_s, expires_at=ends_at, pod=status)
    return json_response(lease)


async def release_lease(request: web.Request) -> web.Response:
    key, index = service_key(request), pod_index(request)
    manager = _context(request).manager
    await manager.leases.release(key, index)
    return json_response(await _pod_status(manager, key, index))


A = TypeVar("A", bound=PodAction)
# One operator action on one pod; returns the failover it caused, if any.
PodActor = Callable[[StatefulRouteManager, ServiceKey, int, A], Awaitable[FailoverEvent | None]]


async def _act_on_pod(request: web.Request, body: type[A], act: PodActor[A]) -> web.Response:
    """Shared by drain, recover and fail: validate, act, answer with the pod as it is now."""
    key, index = service_key(request), pod_index(request)
    action = await read_body(request, body, optional=True)
    context = _context(request)
    event = await act(context.manager, key, index, action)
    status = await _pod_status(context.manager, key, index)
    return json_response(PodChange(pod=status, failover=event))


async def _drain(
    manager: StatefulRouteManager, key: ServiceKey, index: int, action: DrainAction
) -> None:
    await manager.drain_pod(
        key, index, reason=action.reason, move_users_per_s=action.move_users_per_s
    )


async def _recover(
    manager: StatefulRouteManager, key: ServiceKey, index: int, action: RecoverAction
) -> None:
    await manager.recover_pod(key, index, rebalance=action.rebalance, reason=action.reason)


async def _fail(
    manager: StatefulRouteManager, key: ServiceKey, index: int, action: PodAction
) -> FailoverEvent | None:
    return await manager.handle_pod_failure(key, index, reason=action.reason)


async def report_load(request: web.Request) -> web.Response:
    key, index = service_key(request), pod_index(request)
    load = await read_body(request, LoadReport)
    manager = _context(request).manager
    await manager.report_load(key, index, load)
    return json_response(await _pod_status(manager, key, index))


async def drain_pod(request: web.Request) -> web.Response:
    return await _act_on_pod(request, DrainAction, _drain)


async def recover_pod(request: web.Request) -> web.Response:
    return await _act_on_pod(request, RecoverAction, _recover)


async def fail_pod(request: web.Request) -> web.Response:
    return await _act_on_pod(request, PodAction, _fail)


# -- users and routing -----------------------------------------------------------------------


async def get_user(request: web.Request) -> web.Response:
    key, user = service_key(request), uid(request)
    binding = await _context(request).manager.get_binding(key, user)
    return json_response(BindingView.of(binding))


async def migrate_user(request: web.Request) -> web.Response:
    key, user = service_key(request), uid(request)
    migration = await read_body(request, Migration)
    binding = await _context(request).manager.migrate_user(
        key, user, migration.pod, migration.reason
    )
    return json_response(BindingView.of(binding))


async def unbind_user(request: web.Request) -> web.Response:
    key, user = service_key(request), uid(request)
    binding = await _context(request).manager.unbind_user(key, user)
    return json_response(BindingView.of(binding))


async def route(request: web.Request) -> web.Response:
    route_request = await read_body(request, RouteRequest)
    context = _context(request)
    result = await context.metrics.timed_route(context.manager.route_request, route_request)
    return json_response(result)


# -- helpers ---------------------------------------------------------------------------------


async def _pod_status(manager: StatefulRouteManager, key: ServiceKey, index: int) -> PodStatus:
    status = (await manager.get_service_load_status(key)).get(index)
    if status is None:  # removed by someone else in the meantime
        raise UnknownPod(f"pod {index} is not registered in {key}", pod=index)
    return status
