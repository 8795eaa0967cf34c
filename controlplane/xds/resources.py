"""Build Envoy v3 resources from the route manager's state (pure: no I/O, no caching).

One Cluster (EDS) and one ClusterLoadAssignment per service, one VirtualHost per service inside
the one RouteConfiguration, and one Listener whose HttpConnectionManager fetches that
RouteConfiguration over RDS. Names come from ``naming``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from envoy_data_plane.envoy.config.cluster.v3 import (
    CircuitBreakers,
    CircuitBreakersThresholds,
    Cluster,
    ClusterCommonLbConfig,
    ClusterCommonLbConfigConsistentHashingLbConfig,
    ClusterDiscoveryType,
    ClusterEdsClusterConfig,
    ClusterLbPolicy,
    ClusterLbSubsetConfig,
    ClusterLbSubsetConfigLbSubsetFallbackPolicy,
    ClusterLbSubsetConfigLbSubsetSelector,
    OutlierDetection,
)
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    AggregatedConfigSource,
    ApiConfigSource,
    ApiConfigSourceApiType,
    ApiVersion,
    ConfigSource,
    HealthCheck,
    HealthCheckHttpHealthCheck,
    HealthStatus,
    Metadata,
    SocketAddress,
)
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
from envoy_data_plane.envoy.config.route.v3 import (
    HeaderMatcher,
    RetryPolicy,
    Route,
    RouteAction,
    RouteActionHashPolicy,
    RouteActionHashPolicyHeader,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpFilter,
    Rds,
)
from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher
from envoy_data_plane.google.protobuf import Any, Struct, Value

from controlplane.domain import Pod, PodState, Service, ServiceKey, Strategy
from controlplane.domain.envoy_settings import EnvoyClusterSettings
from controlplane.xds.naming import (
    LB_METADATA_NAMESPACE,
    LISTENER_NAME,
    POD_METADATA_KEY,
    ROUTE_CONFIG_NAME,
    cluster_name,
    service_domains,
)

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
# The order ADS pushes in, so Envoy never sees a reference before what it references.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

_LB_POLICY = {
    Strategy.ROUND_ROBIN: ClusterLbPolicy.ROUND_ROBIN,
    Strategy.WEIGHTED_ROUND_ROBIN: ClusterLbPolicy.ROUND_ROBIN,  # weights ride on the endpoints
    Strategy.LEAST_CONNECTIONS: ClusterLbPolicy.LEAST_REQUEST,
    Strategy.LEAST_RESPONSE_TIME: ClusterLbPolicy.LEAST_REQUEST,
    Strategy.POWER_OF_TWO: ClusterLbPolicy.LEAST_REQUEST,  # Envoy's default: best of two
    Strategy.BOUNDED_HASH: ClusterLbPolicy.RING_HASH,
}
_HASHED = frozenset({ClusterLbPolicy.RING_HASH, ClusterLbPolicy.MAGLEV})

_HEALTH_STATUS = {
    PodState.HEALTHY: HealthStatus.HEALTHY,
    PodState.SUSPECT: HealthStatus.HEALTHY,  # still takes users
    PodState.DRAINING: HealthStatus.DRAINING,
    PodState.EJECTED: HealthStatus.UNHEALTHY,
    PodState.DOWN: HealthStatus.UNHEALTHY,
    PodState.RECOVERING: HealthStatus.UNHEALTHY,  # takes no users until it is HEALTHY again
}


class SourceKind(StrEnum):
    """How an Envoy fetches EDS and RDS: the config source our Cluster and Listener name."""

    ADS = "ads"
    REST = "rest"


@dataclass(frozen=True, slots=True)
class RestSource:
    """The REST config source as Envoy's bootstrap defines it."""

    xds_cluster: str
    refresh_delay_s: float
    request_timeout_s: float


def config_source(kind: SourceKind, rest: RestSource | None = None) -> ConfigSource:
    # Envoy rejects the "self" source on REST subscriptions, so each transport gets its own.
    if kind is SourceKind.ADS:
        return ConfigSource(ads=AggregatedConfigSource(), resource_api_version=ApiVersion.V3)
    if rest is None:
        raise ValueError("a REST config source needs the bootstrap's RestSource")
    return ConfigSource(
        api_config_source=ApiConfigSource(
            api_type=ApiConfigSourceApiType.REST,
            transport_api_version=ApiVersion.V3,
            cluster_names=[rest.xds_cluster],
            refresh_delay=_seconds(rest.refresh_delay_s),
            request_timeout=_seconds(rest.request_timeout_s),
        ),
        resource_api_version=ApiVersion.V3,
    )


def lb_policy(strategy: Strategy) -> ClusterLbPolicy:
    return _LB_POLICY[strategy]


def build_cluster(service: Service, source: ConfigSource) -> Cluster:
    """The EDS cluster of a service, with its lb policy and protections."""
    settings = service.settings
    envoy = settings.envoy
    policy = lb_policy(settings.strategy)
    common = None
    if policy in _HASHED:
        # Bounded-load hashing: Envoy caps each host at this percentage of the average load.
        common = ClusterCommonLbConfig(
            consistent_hashing_lb_config=ClusterCommonLbConfigConsistentHashingLbConfig(
                hash_balance_factor=round(settings.hash_balance_factor * 100)
            )
        )
    return Cluster(
        name=cluster_name(service.key),
        type=ClusterDiscoveryType.EDS,
        eds_cluster_config=ClusterEdsClusterConfig(eds_config=source),
        connect_timeout=_seconds(envoy.connect_timeout_s),
        lb_policy=policy,
        common_lb_config=common,
        # Sticky routes pick one pod by its metadata; a pod that is gone falls back to any.
        lb_subset_config=ClusterLbSubsetConfig(
            fallback_policy=ClusterLbSubsetConfigLbSubsetFallbackPolicy.ANY_ENDPOINT,
            subset_selectors=[ClusterLbSubsetConfigLbSubsetSelector(keys=[POD_METADATA_KEY])],
        ),
        circuit_breakers=_circuit_breakers(envoy),
        outlier_detection=_outlier_detection(envoy),
        health_checks=_health_checks(envoy),
    )


def _circuit_breakers(envoy: EnvoyClusterSettings) -> CircuitBreakers:
    limits = envoy.circuit_breakers
    return CircuitBreakers(
        thresholds=[
            CircuitBreakersThresholds(
                max_connections=limits.max_connections,
                max_pending_requests=limits.max_pending_requests,
                max_requests=limits.max_requests,
                max_retries=limits.max_retries,
            )
        ]
    )


def _outlier_detection(envoy: EnvoyClusterSettings) -> OutlierDetection | None:
    od = envoy.outlier_detection
    if od is None:
        return None
    return OutlierDetection(
        consecutive_5xx=od.consecutive_5xx,
        consecutive_gateway_failure=od.consecutive_gateway_failure,
        interval=_seconds(od.interval_s),
        base_ejection_time=_seconds(od.base_ejection_time_s),
        max_ejection_percent=od.max_ejection_percent,
    )


def _health_checks(envoy: EnvoyClusterSettings) -> list[HealthCheck]:
    hc = envoy.active_health_check
    if hc is None:
        return []
    return [
        HealthCheck(
            timeout=_seconds(hc.timeout_s),
            interval=_seconds(hc.interval_s),
            healthy_threshold=hc.healthy_threshold,
            unhealthy_threshold=hc.unhealthy_threshold,
            http_health_check=HealthCheckHttpHealthCheck(path=hc.path),
        )
    ]


def health_status(state: PodState) -> HealthStatus:
    return _HEALTH_STATUS[state]


def build_load_assignment(
    key: ServiceKey, pods: Sequence[Pod], weights: Mapping[int, int]
) -> ClusterLoadAssignment:
    """Every pod of a service as an endpoint with its balancer weight and health status."""
    return ClusterLoadAssignment(
        cluster_name=cluster_name(key),
        endpoints=[
            LocalityLbEndpoints(
                lb_endpoints=[
                    LbEndpoint(
                        endpoint=Endpoint(
                            address=_address(pod.host, pod.port),
                            hostname=f"pod-{pod.index}",
                        ),
                        health_status=health_status(pod.state),
                        metadata=_pod_metadata(pod.index),
                        load_balancing_weight=weights[pod.index],
                    )
                    for pod in sorted(pods, key=lambda p: p.index)
                ]
            )
        ]
        if pods
        else [],
    )


def build_virtual_host(service: Service, sticky: Iterable[tuple[str, int]] = ()) -> VirtualHost:
    """A service's virtual host: one route per sticky user, then the service-wide route.

    ``sticky`` holds (uid, pod index) pairs: a request carrying that uid in the service's uid
    header goes to that pod (falling back to any pod if it is gone).
    """
    settings = service.settings
    name = cluster_name(service.key)
    header = settings.uid_header
    routes = [
        Route(
            match=RouteMatch(
                prefix="/",
                headers=[HeaderMatcher(name=header, string_match=StringMatcher(exact=uid))],
            ),
            route=_route_action(service, metadata_match=_pod_metadata(pod)),
        )
        for uid, pod in sorted(sticky)
    ]
    routes.append(Route(match=RouteMatch(prefix="/"), route=_route_action(service)))
    return VirtualHost(name=name, domains=service_domains(service.key), routes=routes)


def _route_action(service: Service, metadata_match: Metadata | None = None) -> RouteAction:
    settings = service.settings
    retry = settings.envoy.retry
    hash_policy = []
    if lb_policy(settings.strategy) in _HASHED:
        hash_policy = [
            RouteActionHashPolicy(
                header=RouteActionHashPolicyHeader(header_name=settings.uid_header)
            )
        ]
    return RouteAction(
        cluster=cluster_name(service.key),
        metadata_match=metadata_match,
        hash_policy=hash_policy,
        timeout=_seconds(settings.envoy.route_timeout_s),
        retry_policy=RetryPolicy(
            retry_on=retry.retry_on,
            num_retries=retry.num_retries,
            per_try_timeout=_seconds(retry.per_try_timeout_s) if retry.per_try_timeout_s else None,
        ),
    )


def build_route_configuration() -> RouteConfiguration:
    """The RouteConfiguration without its virtual hosts.

    The cache appends each service's virtual host, serialized once, so that one service's
    change does not serialize every virtual host again.
    """
    return RouteConfiguration(name=ROUTE_CONFIG_NAME)


def build_listener(address: str, port: int, source: ConfigSource) -> Listener:
    """The proxy listener: HTTP, routes fetched over RDS."""
    manager = HttpConnectionManager(
        stat_prefix="stateful_route",
        rds=Rds(config_source=source, route_config_name=ROUTE_CONFIG_NAME),
        http_filters=[
            HttpFilter(name="envoy.filters.http.router", typed_config=Any.pack(Router()))
        ],
    )
    return Listener(
        name=LISTENER_NAME,
        address=_address(address, port),
        filter_chains=[
            FilterChain(
                filters=[
                    Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=Any.pack(manager),
                    )
                ]
            )
        ],
    )


def _pod_metadata(index: int) -> Metadata:
    return Metadata(
        filter_metadata={
            LB_METADATA_NAMESPACE: Struct(fields={POD_METADATA_KEY: Value(string_value=str(index))})
        }
    )


def _address(host: str, port: int) -> Address:
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
