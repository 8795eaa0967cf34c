"""Every operation of the admin API, in one table.

The app's routes, their token rules, the OpenAPI document, the /docs page and docs/api.md are
all built from ``OPERATIONS``, so none of them can describe an endpoint the others lack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel

from controlplane.admin import handlers as h
from controlplane.admin.auth import Access, guard
from controlplane.admin.config import AdminSettings
from controlplane.admin.dashboard import dashboard
from controlplane.admin.envoy_status import EnvoyStatus
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
    RouteResult,
    Service,
    ServiceSettings,
)

JSON = "application/json"
# A response that is not one of our models: (media type, JSON schema of it).
RawResponse = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    description: str
    schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    access: Access
    response: type[BaseModel] | RawResponse | None  # None: an empty 204
    many: bool = False  # the response is an array of ``response``
    status: int = 200
    body: type[BaseModel] | None = None
    body_optional: bool = False
    query: tuple[Query, ...] = ()
    errors: tuple[int, ...] = ()  # besides 401 (from ``access``), 400/413/422 (from the body)
    also: tuple[int, ...] = ()  # other statuses answered with the ``response`` body
    description: str = ""


_SERVICE = "/api/v1/services/{namespace}/{service}"
_POD = _SERVICE + "/pods/{index}"
_USER = _SERVICE + "/users/{uid}"
_STATE = (404, 503)  # unknown service or pod; Redis unavailable

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET", "/", dashboard, "The operator's dashboard (a web page)", "meta", Access.OPEN,
        ("text/html", {"type": "string"}),
        description="Services, live pods, failovers, Envoys and user lookups, with drain, "
        "recover, fail and move buttons. The page itself is open; its requests are this API's, "
        "with the token the operator enters (kept in the browser tab's sessionStorage).",
    ),
    Operation(
        "GET", "/healthz", h.healthz, "Readiness: is Redis reachable?", "meta", Access.OPEN,
        Health, also=(503,),
        description="200 with status `ok` while Redis answers; 503 with status `degraded` "
        "(same body) when it does not: use it as a readiness check, not a liveness check.",
    ),
    Operation(
        "GET", "/metrics", h.metrics, "Prometheus metrics", "meta", Access.READ,
        ("text/plain", {"type": "string"}),
        description="Prometheus text exposition. Bound users per pod are read on each scrape.",
    ),
    Operation(
        "GET", "/openapi.json", h.openapi, "This API as an OpenAPI 3.1 document", "meta",
        Access.OPEN, (JSON, {"type": "object"}),
    ),
    Operation(
        "GET", "/docs", h.docs, "This API as a web page", "meta", Access.OPEN,
        ("text/html", {"type": "string"}),
    ),
    Operation(
        "GET", "/api/v1/services", h.list_services, "List services", "services", Access.READ,
        Service, many=True, errors=(503,),
    ),
    Operation(
        "PUT", _SERVICE, h.put_service, "Register a service or replace its settings",
        "services", Access.WRITE, Service, body=ServiceSettings, body_optional=True,
        errors=(503,),
        description="An empty body registers the service with default settings. "
        "Pods are registered separately.",
    ),
    Operation(
        "DELETE", _SERVICE, h.delete_service, "Delete a service, its pods and bindings",
        "services", Access.WRITE, None, status=204, errors=_STATE,
    ),
    Operation(
        "GET", _SERVICE + "/failovers", h.failovers, "Failover history, newest first",
        "services", Access.USER_READ, FailoverEvent, many=True, errors=_STATE,
        query=(
            Query(
                "limit", "At most this many events (default: all that are kept).",
                {"type": "integer", "minimum": 1, "maximum": h.MAX_HISTORY_LIMIT},
            ),
            Query(
                "pod", "Only the events of this pod.",
                {"type": "integer", "minimum": 0, "maximum": MAX_POD_INDEX},
            ),
            Query(
                "type", "Only the events of this type.",
                {"type": "string", "enum": [kind.value for kind in FailoverType]},
            ),
        ),
        description="`limit` counts the events that match `pod` and `type`.",
    ),
    Operation(
        "GET", _SERVICE + "/pods", h.list_pods, "Pods with state, weight, load and bound users",
        "pods", Access.READ, PodStatus, many=True, errors=_STATE,
    ),
    Operation(
        "GET", _POD + "/users", h.pod_users, "One page of the users bound to a pod", "pods",
        Access.USER_READ, PodUsers, errors=_STATE,
        query=(
            Query(
                "cursor", "Where the page starts: 0 (the default) or the previous page's "
                "`next_cursor`.", {"type": "integer", "minimum": 0, "maximum": h.MAX_CURSOR},
            ),
            Query(
                "limit", f"About this many users (default {h.DEFAULT_PAGE_LIMIT}).",
                {"type": "integer", "minimum": 1, "maximum": h.MAX_PAGE_LIMIT},
            ),
        ),
        description="The pod's reverse index, scanned (Redis SSCAN): follow `next_cursor` until "
        "it is null. A page holds at least `limit` users unless it is the last, and may hold "
        "more (a small pod's users come in one page); a user bound or moved during the scan "
        "may be missed or listed twice.",
    ),
    Operation(
        "POST", _SERVICE + "/pods", h.put_pod, "Register a pod, or change its address or weight",
        "pods", Access.WRITE, PodStatus, body=PodSpec, errors=_STATE,
        description="A known pod keeps its health state and load.",
    ),
    Operation(
        "POST", _SERVICE + "/leases", h.register_lease,
        "Register a pod with a lease, or renew it (pods or their sidecars call this)", "pods",
        Access.WRITE, Lease, body=LeaseRequest, errors=_STATE,
        description="For orchestrators without stable names: the pod registers itself and "
        "calls again before `ttl_s` is over (every third of it). Its index is `index`, else "
        "its name's ordinal, else that of the pod already at this host (or name) and port, "
        "else the lowest free one; renew with the answer's `pod_index`. A renewal that changes "
        "nothing writes only the lease. A lease that lapses drains the pod at once and fails "
        "it (its users move) once it has been over for the server's `discovery.lease_drain_s`; "
        "a renewal after that undoes the drain, or counts as a passed check of the failed pod.",
    ),
    Operation(
        "DELETE", _POD + "/lease", h.release_lease,
        "End a pod's lease now (the pod is leaving)", "pods", Access.WRITE, PodStatus,
        errors=_STATE,
        description="The pod is drained at once and failed `discovery.lease_drain_s` later, "
        "as if its lease had lapsed. 404 `no_lease` for a pod that holds no lease.",
    ),
    Operation(
        "DELETE", _POD, h.delete_pod, "Remove a pod (its users are moved first)", "pods",
        Access.WRITE, PodRemoval, errors=_STATE,
        description="The answer's `failover` says how many users moved, and to which pods.",
    ),
    Operation(
        "POST", _POD + "/load", h.report_load, "Report a pod's load (pods call this)", "pods",
        Access.WRITE, PodStatus, body=LoadReport, errors=_STATE,
        description="Feeds least-connections, least-response-time and the Envoy weights.",
    ),
    Operation(
        "POST", _POD + "/drain", h.drain_pod, "Drain a pod: no new users, bound users stay",
        "pods", Access.WRITE, PodChange, body=DrainAction, body_optional=True, errors=_STATE,
        description="With `move_users_per_s`, its users move to other pods at that rate "
        "(one USER_MIGRATED event when done); else they stay until idle.",
    ),
    Operation(
        "POST", _POD + "/recover", h.recover_pod, "Make a pod take users again", "pods",
        Access.WRITE, PodChange, body=RecoverAction, body_optional=True, errors=_STATE,
        description="With `rebalance`, the pod is also given its fair share of users now.",
    ),
    Operation(
        "POST", _POD + "/fail", h.fail_pod, "Fail a pod: mark it down and move its users",
        "pods", Access.WRITE, PodChange, body=PodAction, body_optional=True, errors=_STATE,
        description="The answer's `failover` says how many users moved, and to which pods.",
    ),
    Operation(
        "GET", _USER, h.get_user, "A user's binding", "users", Access.USER_READ, BindingView,
        errors=_STATE,
        description="404 `not_bound` when the user has no binding.",
    ),
    Operation(
        "PUT", _USER, h.migrate_user, "Move a user to a pod (binding it if unbound)", "users",
        Access.WRITE, BindingView, body=Migration, errors=(*_STATE, 409),
        description="409 `pod_not_eligible` when the target pod takes no new users "
        "(draining, down, ejected or recovering).",
    ),
    Operation(
        "DELETE", _USER, h.unbind_user, "Forget a user's binding", "users", Access.WRITE,
        BindingView, errors=_STATE,
        description="Returns the binding that was removed; 404 `not_bound` if there was none.",
    ),
    Operation(
        "POST", "/api/v1/route", h.route, "The pod for a user (binding it on first sight)",
        "routing", Access.WRITE, RouteResult, body=RouteRequest, errors=(*_STATE, 429),
        description="Binds the user when it is unbound or its pod keeps no users, hence a "
        "write. 503 `no_healthy_pods` when no pod takes new users; 429 `new_users_limited` "
        "when the user is unbound and the service is at a limit of its `new_users` settings.",
    ),
    Operation(
        "GET", "/api/v1/envoys", h.envoys, "Envoys connected to the xDS server", "envoys",
        Access.READ, EnvoyStatus, many=True,
        description="What each Envoy ACKed and last NACKed per resource type, and whether the "
        "ACKed version is the one served now (`current_version`, `up_to_date`; null where "
        "it cannot be compared, as for a delta stream's types other than the users' scopes). "
        "[] when no xDS server is wired in.",
    ),
)  # fmt: skip


def add_routes(app: web.Application, settings: AdminSettings) -> None:
    """Register every operation on ``app``, each behind the token check its access needs."""
    app.router.add_routes(
        web.route(op.method, op.path, guard(op.handler, op.access, settings)) for op in OPERATIONS
    )
