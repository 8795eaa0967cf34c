"""Prometheus metrics of one control plane, on a registry of their own.

A registry per app (not prometheus_client's global one) lets several apps live in one process,
as in tests. The xDS server increments ``xds_pushes``/``xds_acks``/``xds_nacks`` on the object
the app was given (``xds_pushed``/``xds_replied``); the admin API serves everything at
``/metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from redis.exceptions import RedisError

from controlplane.domain import FailoverEvent, FailoverType, RouteRequest, RouteResult
from controlplane.errors import (
    NewUsersLimited,
    StatefulRouteError,
    StoreUnavailable,
    UnknownService,
)
from controlplane.manager import StatefulRouteManager

# The route call is one Redis round trip when all goes well, a few more on a new binding.
_ROUTE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class AdminMetrics:
    """The control plane's metrics; ``render()`` gives the text exposition."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        service = ("namespace", "service")
        self.bound_users = Gauge(
            "stateful_route_bound_users",
            "Users bound to each pod (refreshed on every scrape).",
            (*service, "pod"),
            registry=r,
        )
        self.route_requests = Counter(
            "stateful_route_route_requests",
            "Route requests by outcome: bound, new_binding, or the error code.",
            ("outcome",),
            registry=r,
        )
        self.route_seconds = Histogram(
            "stateful_route_route_seconds",
            "Latency of the miss path: deciding the pod of a user Envoy has no route for.",
            buckets=_ROUTE_BUCKETS,
            registry=r,
        )
        self.new_users_refused = Counter(
            "stateful_route_new_users_refused",
            "New users not bound because their service was at a limit (reason: "
            "max_bound_users or new_per_s); Envoy balanced them or answered 429.",
            (*service, "reason"),
            registry=r,
        )
        self.failovers = Counter(
            "stateful_route_failovers",
            "Pod failures handled (each moves the pod's users elsewhere).",
            service,
            registry=r,
        )
        self.failover_moved_users = Counter(
            "stateful_route_failover_moved_users",
            "Users moved off failed or removed pods.",
            service,
            registry=r,
        )
        self.migrations = Counter(
            "stateful_route_migrations",
            "Users moved to another pod by an operator.",
            service,
            registry=r,
        )
        self.redis_errors = Counter(
            "stateful_route_redis_errors",
            "Requests that failed because Redis was unreachable or answered with an error.",
            registry=r,
        )
        xds = ("type",)  # the resource type's short name: Cluster, ClusterLoadAssignment, ...
        self.xds_pushes = Counter(
            "stateful_route_xds_pushes", "xDS responses sent to Envoys.", xds, registry=r
        )
        self.xds_acks = Counter(
            "stateful_route_xds_acks", "xDS responses Envoys accepted.", xds, registry=r
        )
        self.xds_nacks = Counter(
            "stateful_route_xds_nacks", "xDS responses Envoys rejected.", xds, registry=r
        )

    def xds_pushed(self, type_url: str) -> None:
        """The xDS server sent a response of ``type_url`` to an Envoy."""
        self.xds_pushes.labels(_short_type(type_url)).inc()

    def xds_replied(self, type_url: str, *, accepted: bool) -> None:
        """An Envoy ACKed (``accepted``) or NACKed a response of ``type_url``."""
        counter = self.xds_acks if accepted else self.xds_nacks
        counter.labels(_short_type(type_url)).inc()

    async def timed_route(
        self, route: Callable[[RouteRequest], Awaitable[RouteResult]], request: RouteRequest
    ) -> RouteResult:
        """``await route(request)``, counted by outcome and timed."""
        started = time.perf_counter()
        outcome = "internal"
        try:
            result = await route(request)
            outcome = "new_binding" if result.new_binding else "bound"
            return result
        except NewUsersLimited as exc:
            outcome = exc.code
            refused = (exc.detail["namespace"], exc.detail["service"], exc.detail["reason"])
            self.new_users_refused.labels(*map(str, refused)).inc()
            raise
        except StatefulRouteError as exc:
            outcome = exc.code
            raise
        except RedisError:
            outcome = StoreUnavailable.code
            raise
        finally:
            self.route_requests.labels(outcome).inc()
            self.route_seconds.observe(time.perf_counter() - started)

    def record_event(self, event: FailoverEvent) -> None:
        """Count a failover event the manager returned."""
        labels = (event.namespace, event.service)
        if event.type is FailoverType.POD_FAILURE:
            self.failovers.labels(*labels).inc()
            self.failover_moved_users.labels(*labels).inc(event.affected_users)
        elif event.type is FailoverType.USER_MIGRATED:
            self.migrations.labels(*labels).inc(event.affected_users)

    async def refresh_bound_users(self, manager: StatefulRouteManager) -> None:
        """Reset the per-pod gauge from the manager, so removed pods and services drop out."""
        counts: dict[tuple[str, str, str], int] = {}
        try:
            for service in await manager.services():
                try:
                    pods = await manager.get_service_load_status(service.key)
                except UnknownService:
                    continue  # deleted since it was listed
                for index, pod in pods.items():
                    counts[(service.namespace, service.name, str(index))] = pod.bound_users
        except RedisError:
            self.redis_errors.inc()
            counts.clear()  # publish no counts: partial or stale ones would look current
        self.bound_users.clear()
        for labels, users in counts.items():
            self.bound_users.labels(*labels).set(users)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition in the format ``accept`` asks for (text by default), and its type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


def _short_type(type_url: str) -> str:
    # type.googleapis.com/envoy.config.cluster.v3.Cluster -> Cluster: few, readable label values.
    return type_url.rsplit(".", 1)[-1]
