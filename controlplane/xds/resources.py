"""Build Envoy v3 resources from the route manager's state (pure: no I/O, no caching).

One Cluster (EDS) and one ClusterLoadAssignment per service, one VirtualHost per service inside
the one RouteConfiguration, and one Listener whose HttpConnectionManager fetches that
RouteConfiguration over RDS. Names come from ``naming``.

How a request finds its user's pod (docs/architecture.md tells it in full):
- Envoy first strips the two internal headers a client might forge (``SESSION_HEADER``,
  ``SERVICE_HEADER``).
- A user in the service's virtual host ``matcher`` (an exact map on the uid header) gets a route
  whose metadata names its pod: the cluster's subset load balancer holds one subset per pod
  that keeps its users (``POD_SUBSET_KEY`` on the endpoint), so the request goes there. A pod
  that failed loses its label in the EDS, and its users' requests fall back to the cluster's
  own balancer until their new routes arrive. Such a request runs no filter but the router.
- Anyone else gets the fallback route, the only one that turns the other filters on: it names
  the service in ``SERVICE_HEADER`` and lets ext_authz ask the control plane (the miss path);
  the answer carries ``SESSION_HEADER``, and the stateful_session filter sends the request to
  that host while it is healthy or draining, else the cluster's own balancer picks one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import betterproto2
from envoy_data_plane.envoy.config.cluster.v3 import (
    CircuitBreakers,
    CircuitBreakersThresholds,
    Cluster,
    ClusterCommonLbConfig,
    ClusterCommonLbConfigConsistentHashingLbConfig,
    ClusterDiscoveryType,
    ClusterDnsLookupFamily,
    ClusterEdsClusterConfig,
    ClusterLbPolicy,
    ClusterLbSubsetConfig,
    ClusterLbSubsetConfigLbSubsetFallbackPolicy,
    ClusterLbSubsetConfigLbSubsetSelector,
    OutlierDetection,
)
from envoy_data_plane.envoy.config.common.mutation_rules.v3 import (
    HeaderMutation as MutationRulesHeaderMutation,
)
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    AggregatedConfigSource,
    ApiConfigSource,
    ApiConfigSourceApiType,
    ApiVersion,
    ConfigSource,
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
    HealthCheck,
    HealthCheckHttpHealthCheck,
    HealthStatus,
    HealthStatusSet,
    HttpUri,
    Metadata,
    SocketAddress,
    TypedExtensionConfig,
)
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
from envoy_data_plane.envoy.config.route.v3 import (
    FilterConfig,
    RetryPolicy,
    RetryPolicyRetryBackOff,
    RetryPolicyRetryHostPredicate,
    Route,
    RouteAction,
    RouteActionHashPolicy,
    RouteActionHashPolicyHeader,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import (
    AuthorizationResponse,
    CheckSettings,
    ExtAuthz,
    ExtAuthzPerRoute,
    HttpService,
)
from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import (
    HeaderMutation,
    HeaderMutationPerRoute,
    Mutations,
)
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.http.stateful_session.v3 import (
    StatefulSession,
    StatefulSessionPerRoute,
)
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpFilter,
    Rds,
)
from envoy_data_plane.envoy.extensions.health_check.event_sinks.file.v3 import (
    HealthCheckEventFileSink,
)
from envoy_data_plane.envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
    HeaderMutation as EarlyHeaderMutation,
)
from envoy_data_plane.envoy.extensions.http.stateful_session.header.v3 import (
    HeaderBasedSessionState,
)
from envoy_data_plane.envoy.extensions.retry.host.previous_hosts.v3 import (
    PreviousHostsPredicate,
)
from envoy_data_plane.envoy.type.matcher.v3 import (
    HttpRequestHeaderMatchInput,
    ListStringMatcher,
    StringMatcher,
)
from envoy_data_plane.google.protobuf import Any, Struct, Value
from envoy_data_plane.xds.core.v3 import TypedExtensionConfig as XdsTypedExtensionConfig
from envoy_data_plane.xds.type.matcher.v3 import Matcher as XdsMatcher
from envoy_data_plane.xds.type.matcher.v3 import (
    MatcherMatcherTree,
    MatcherMatcherTreeMatchMap,
    MatcherOnMatch,
)

from controlplane.domain import Pod, PodState, Service, ServiceKey, Strategy
from controlplane.domain.envoy_settings import EnvoyClusterSettings
from controlplane.xds.naming import (
    LISTENER_NAME,
    MISS_PATH_CLUSTER,
    MISS_PATH_PREFIX,
    POD_SUBSET_KEY,
    ROUTE_CONFIG_NAME,
    SERVICE_HEADER,
    SESSION_HEADER,
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
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
HEADER_MUTATION_FILTER = "envoy.filters.http.header_mutation"
STATEFUL_SESSION_FILTER = "envoy.filters.http.stateful_session"
# Endpoint and route metadata the subset load balancer reads.
LB_METADATA = "envoy.lb"
MISS_PATH_TIMEOUT_S = 1.0

_HEALTH_STATUS = {
    PodState.HEALTHY: HealthStatus.HEALTHY,
    PodState.SUSPECT: HealthStatus.HEALTHY,  # still takes users
    PodState.DRAINING: HealthStatus.DRAINING,
    PodState.EJECTED: HealthStatus.UNHEALTHY,
    PodState.DOWN: HealthStatus.UNHEALTHY,
    PodState.RECOVERING: HealthStatus.UNHEALTHY,  # takes no users until it is HEALTHY again
}


# Hosts a session header may pin a request to (a draining pod keeps its users); anything else,
# e.g. a pod Envoy has just ejected, falls back to the balancer. The control plane does not
# place users on a pod Envoy still ejects (domain.health), so the two agree.
_SESSION_HOST_STATUSES = [
    HealthStatus.UNKNOWN,
    HealthStatus.HEALTHY,
    HealthStatus.DEGRADED,
    HealthStatus.DRAINING,
]


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


def build_cluster(
    service: Service, source: ConfigSource, health_event_log: str | None = None
) -> Cluster:
    """The EDS cluster of a service, with its lb policy and protections."""
    settings = service.settings
    envoy = settings.envoy
    policy = lb_policy(settings.strategy)
    hashing = None
    if policy in _HASHED:
        # Bounded-load hashing: Envoy caps each host at this percentage of the average load.
        hashing = ClusterCommonLbConfigConsistentHashingLbConfig(
            hash_balance_factor=round(settings.hash_balance_factor * 100)
        )
    common = ClusterCommonLbConfig(
        consistent_hashing_lb_config=hashing,
        override_host_status=HealthStatusSet(statuses=_SESSION_HOST_STATUSES),
    )
    # One subset per labelled pod, for its bound users' routes. A single-host subset is a
    # lookup with no balancer behind it, and it ignores the host's health on purpose: a
    # draining pod keeps its users, and a failed pod loses its label, not its health flag.
    # Routes naming no (or a vanished) label get the cluster's own balancer.
    subsets = ClusterLbSubsetConfig(
        fallback_policy=ClusterLbSubsetConfigLbSubsetFallbackPolicy.ANY_ENDPOINT,
        subset_selectors=[
            ClusterLbSubsetConfigLbSubsetSelector(
                keys=[POD_SUBSET_KEY], single_host_per_subset=True
            )
        ],
    )
    return Cluster(
        name=cluster_name(service.key),
        type=ClusterDiscoveryType.EDS,
        eds_cluster_config=ClusterEdsClusterConfig(eds_config=source),
        connect_timeout=_seconds(envoy.connect_timeout_s),
        lb_policy=policy,
        common_lb_config=common,
        lb_subset_config=subsets,
        circuit_breakers=_circuit_breakers(envoy),
        outlier_detection=_outlier_detection(envoy),
        health_checks=_health_checks(envoy, health_event_log),
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
        split_external_local_origin_errors=True,
        consecutive_local_origin_failure=od.consecutive_local_origin_failure,
        interval=_seconds(od.interval_s),
        base_ejection_time=_seconds(od.base_ejection_time_s),
        max_ejection_percent=od.max_ejection_percent,
    )


def _health_checks(envoy: EnvoyClusterSettings, event_log: str | None) -> list[HealthCheck]:
    hc = envoy.active_health_check
    if hc is None:
        return []
    # Envoy's verdicts go to a file the control plane follows (signals.health_event_log).
    sinks = []
    if event_log:
        sink = HealthCheckEventFileSink(event_log_path=event_log)
        sinks.append(
            TypedExtensionConfig(
                name="envoy.health_check.event_sink.file", typed_config=Any.pack(sink)
            )
        )
    return [
        HealthCheck(
            timeout=_seconds(hc.timeout_s),
            interval=_seconds(hc.interval_s),
            healthy_threshold=hc.healthy_threshold,
            unhealthy_threshold=hc.unhealthy_threshold,
            http_health_check=HealthCheckHttpHealthCheck(path=hc.path),
            event_logger=sinks,
        )
    ]


def health_status(state: PodState) -> HealthStatus:
    return _HEALTH_STATUS[state]


def pod_label(index: int) -> str:
    """The value of ``POD_SUBSET_KEY`` that pod ``index``'s endpoint and its users' routes carry."""
    return str(index)


def _pod_metadata(index: int) -> Metadata:
    label = Struct(fields={POD_SUBSET_KEY: Value(string_value=pod_label(index))})
    return Metadata(filter_metadata={LB_METADATA: label})


def build_load_assignment(
    key: ServiceKey, pods: Sequence[Pod], weights: Mapping[int, int]
) -> ClusterLoadAssignment:
    """Every pod of a service as an endpoint with its balancer weight and health status, and
    its subset label while its bound users may reach it."""
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
                        metadata=_pod_metadata(pod.index) if pod.keeps_bound_users else None,
                        load_balancing_weight=weights[pod.index],
                    )
                    for pod in sorted(pods, key=lambda p: p.index)
                ]
            )
        ]
        if pods
        else [],
    )


def load_assignment_json(
    key: ServiceKey, pods: Sequence[Pod], weights: Mapping[int, int]
) -> dict[str, object]:
    """``build_load_assignment``'s message as protobuf JSON, built directly.

    Endpoints change with every weight and health change, and betterproto2's ``to_dict``
    costs milliseconds per call; the tests hold the two forms equal.
    """
    endpoints: list[dict[str, object]] = []
    for pod in sorted(pods, key=lambda p: p.index):
        endpoint: dict[str, object] = {
            "endpoint": {
                "address": {"socketAddress": {"address": pod.host, "portValue": pod.port}},
                "hostname": f"pod-{pod.index}",
            },
            "healthStatus": health_status(pod.state).name,
        }
        if pod.keeps_bound_users:
            label = {POD_SUBSET_KEY: pod_label(pod.index)}
            endpoint["metadata"] = {"filterMetadata": {LB_METADATA: label}}
        endpoint["loadBalancingWeight"] = weights[pod.index]
        endpoints.append(endpoint)
    assignment: dict[str, object] = {"clusterName": cluster_name(key)}
    if endpoints:
        assignment["endpoints"] = [{"lbEndpoints": endpoints}]
    return assignment


def build_virtual_host(
    service: Service, pods: Sequence[Pod], routes: Mapping[str, int]
) -> VirtualHost:
    """A service's virtual host: its users' routes in an exact map on the uid header.

    This builds the whole message; the cache assembles the same bytes from cached parts
    (``sticky_host``), which the tests check against this.
    """
    host, shared = build_host_head(service)
    host.retry_policy = shared.retry_policy
    indexes = {pod.index for pod in pods}
    users = {uid: index for uid, index in routes.items() if index in indexes}
    tree = None
    if users:  # Envoy rejects an empty map
        tree = MatcherMatcherTree(
            input=uid_input(service),
            exact_match_map=MatcherMatcherTreeMatchMap(
                map={uid: sticky_on_match(service, index) for uid, index in users.items()}
            ),
        )
    host.matcher = XdsMatcher(matcher_tree=tree, on_no_match=fallback_on_match(service))
    return host


def build_host_head(service: Service) -> tuple[VirtualHost, VirtualHost]:
    """The virtual host without its matcher, as the fields serialized before the matcher
    (name, domains) and those after it (protobuf merges the two halves into one message).

    What every user's route shares (the retry policy) is said once here: a user's map entry
    then carries only what differs, its pod's label (Envoy keeps one route object per entry,
    so their size is Envoy's memory and cache footprint).
    """
    domains = [*service_domains(service.key), *service.settings.domains]
    shared = VirtualHost(retry_policy=_retry_policy(service))
    return VirtualHost(name=cluster_name(service.key), domains=domains), shared


def uid_input(service: Service) -> XdsTypedExtensionConfig:
    """The matcher's input: the service's uid header."""
    return XdsTypedExtensionConfig(
        name="uid",
        typed_config=Any.pack(HttpRequestHeaderMatchInput(header_name=service.settings.uid_header)),
    )


def sticky_on_match(service: Service, index: int) -> MatcherOnMatch:
    """The route of a user bound to pod ``index``: to that pod's subset of the cluster."""
    action = _route_action(service)
    action.metadata_match = _pod_metadata(index)
    return _on_match(action, {})


def fallback_on_match(service: Service) -> MatcherOnMatch:
    """The route of anyone else: ask the miss path, naming the service so it can place them,
    and pin the request to the pod it answers. The only route that turns those filters on."""
    action = _route_action(service)
    action.retry_policy = _retry_policy(service, to_another_pod=True)
    return _on_match(
        action,
        {
            EXT_AUTHZ_FILTER: _enable(ExtAuthzPerRoute(check_settings=CheckSettings())),
            HEADER_MUTATION_FILTER: _enable(_set_header(SERVICE_HEADER, str(service.key))),
            # (Envoy refuses an empty per-route config, so the listener's is said again.)
            STATEFUL_SESSION_FILTER: _enable(
                StatefulSessionPerRoute(stateful_session=_stateful_session())
            ),
        },
    )


def _enable(per_route: betterproto2.Message) -> Any:
    """Turn on, for one route, a filter the listener declares off by default."""
    return Any.pack(FilterConfig(config=Any.pack(per_route)))


def _on_match(action: RouteAction, per_filter: dict[str, Any]) -> MatcherOnMatch:
    route = Route(match=RouteMatch(prefix="/"), route=action, typed_per_filter_config=per_filter)
    return MatcherOnMatch(
        action=XdsTypedExtensionConfig(name="route", typed_config=Any.pack(route))
    )


def _set_header(name: str, value: str) -> HeaderMutationPerRoute:
    return HeaderMutationPerRoute(
        mutations=Mutations(
            request_mutations=[
                MutationRulesHeaderMutation(
                    append=HeaderValueOption(
                        header=HeaderValue(key=name, value=value),
                        append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
                    )
                )
            ]
        )
    )


def _route_action(service: Service) -> RouteAction:
    settings = service.settings
    hash_policy = []
    if lb_policy(settings.strategy) in _HASHED:
        hash_policy = [
            RouteActionHashPolicy(
                header=RouteActionHashPolicyHeader(header_name=settings.uid_header)
            )
        ]
    return RouteAction(
        cluster=cluster_name(service.key),
        hash_policy=hash_policy,
        timeout=_seconds(settings.envoy.route_timeout_s),
    )


def _retry_policy(service: Service, *, to_another_pod: bool = False) -> RetryPolicy:
    """Retries of failures before a pod saw the request.

    A bound user's retry needs no plugin: its pod's subset holds that pod alone, and once the
    pod has failed its label is gone and the backed-off retry finds the cluster's balancer.
    Retry plugins are made afresh for every request (about 3% of a proxy core measured here),
    so only the fallback route, pinned by a session header, asks for another pod.
    """
    retry = service.settings.envoy.retry
    policy = RetryPolicy(
        retry_on=retry.retry_on,
        num_retries=retry.num_retries,
        per_try_timeout=_seconds(retry.per_try_timeout_s) if retry.per_try_timeout_s else None,
        retry_back_off=RetryPolicyRetryBackOff(base_interval=_seconds(retry.back_off_base_s)),
    )
    if to_another_pod:
        policy.retry_host_predicate = [
            RetryPolicyRetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=Any.pack(PreviousHostsPredicate()),
            )
        ]
        policy.host_selection_retry_max_attempts = 5
    return policy


def build_route_configuration() -> RouteConfiguration:
    """The RouteConfiguration without its virtual hosts.

    The cache appends each service's virtual host, serialized once, so that one service's
    change does not serialize every virtual host again.
    """
    return RouteConfiguration(name=ROUTE_CONFIG_NAME)


def build_listener(
    address: str, port: int, source: ConfigSource, uid_headers: Iterable[str]
) -> Listener:
    """The proxy listener: HTTP, routes over RDS, the filters of the sticky data path."""
    manager = HttpConnectionManager(
        stat_prefix="stateful_route",
        rds=Rds(config_source=source, route_config_name=ROUTE_CONFIG_NAME),
        # Before any route is chosen: a client must not name its own pod or service.
        early_header_mutation_extensions=[
            TypedExtensionConfig(
                name="strip-internal-headers",
                typed_config=Any.pack(
                    EarlyHeaderMutation(
                        mutations=[
                            MutationRulesHeaderMutation(remove=SESSION_HEADER),
                            MutationRulesHeaderMutation(remove=SERVICE_HEADER),
                        ]
                    )
                ),
            )
        ],
        # All but the router are off unless a route turns them on (the fallback route does):
        # Envoy then does not even create them for a bound user's request.
        http_filters=[
            HttpFilter(
                name=HEADER_MUTATION_FILTER,
                typed_config=Any.pack(HeaderMutation()),
                disabled=True,
            ),
            HttpFilter(
                name=EXT_AUTHZ_FILTER,
                typed_config=Any.pack(_ext_authz(uid_headers)),
                disabled=True,
            ),
            HttpFilter(
                name=STATEFUL_SESSION_FILTER,
                typed_config=Any.pack(_stateful_session()),
                disabled=True,
            ),
            HttpFilter(name="envoy.filters.http.router", typed_config=Any.pack(Router())),
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


def _stateful_session() -> StatefulSession:
    return StatefulSession(
        session_state=TypedExtensionConfig(
            name="envoy.http.stateful_session.header",
            typed_config=Any.pack(HeaderBasedSessionState(name=SESSION_HEADER)),
        ),
        strict=False,  # a pod that failed meanwhile: the cluster's balancer, not an error
    )


def _ext_authz(uid_headers: Iterable[str]) -> ExtAuthz:
    allowed = [SERVICE_HEADER, *sorted(set(uid_headers))]
    return ExtAuthz(
        transport_api_version=ApiVersion.V3,
        # The control plane unreachable: requests still flow, balanced by Envoy alone.
        failure_mode_allow=True,
        allowed_headers=ListStringMatcher(patterns=[StringMatcher(exact=h) for h in allowed]),
        http_service=HttpService(
            server_uri=HttpUri(
                uri=f"http://{MISS_PATH_CLUSTER}",
                cluster=MISS_PATH_CLUSTER,
                timeout=_seconds(MISS_PATH_TIMEOUT_S),
            ),
            path_prefix=MISS_PATH_PREFIX,
            authorization_response=AuthorizationResponse(
                allowed_upstream_headers=ListStringMatcher(
                    patterns=[StringMatcher(exact=SESSION_HEADER)]
                )
            ),
        ),
    )


def build_miss_path_cluster(host: str, port: int) -> Cluster:
    """Where Envoy sends its ext_authz checks: the control plane (a name or an address)."""
    return Cluster(
        name=MISS_PATH_CLUSTER,
        type=ClusterDiscoveryType.STRICT_DNS,
        # A name like "localhost" may resolve to ::1 first while we listen on IPv4 only.
        dns_lookup_family=ClusterDnsLookupFamily.V4_PREFERRED,
        connect_timeout=_seconds(MISS_PATH_TIMEOUT_S),
        load_assignment=ClusterLoadAssignment(
            cluster_name=MISS_PATH_CLUSTER,
            endpoints=[
                LocalityLbEndpoints(
                    lb_endpoints=[LbEndpoint(endpoint=Endpoint(address=_address(host, port)))]
                )
            ],
        ),
    )


def _address(host: str, port: int) -> Address:
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
