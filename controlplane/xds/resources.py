"""Build Envoy v3 resources from the route manager's state (pure: no I/O, no caching).

One Cluster (EDS) and one ClusterLoadAssignment per service; one Listener whose
HttpConnectionManager selects each request's RouteConfiguration by *scope* (scoped RDS); the
RouteConfigurations those scopes name. Names come from ``naming``, scopes from ``scopes``.

How a request finds its user's pod (docs/architecture.md tells it in full):
- Envoy's early header mutation writes the scope key from the uid header (``scopes``), and the
  user's scope names the RouteConfiguration of its pods: a route to its pod's subset of the
  service's cluster (``POD_SUBSET_KEY`` on the endpoint). A pod that failed loses its label in
  the EDS, and a request naming it fails at once (503) until its user's scope is re-pointed:
  it never lands on a pod Envoy picks itself. Such a request runs no filter but the router.
- A request with no uid has a scope too, naming the balanced RouteConfiguration.
- A user with no scope yet finds no route, so the one filter no route turns off runs: the miss
  path's Lua filter (``misspath.lua``) asks the control plane, which binds the user and answers
  once this Envoy holds the user's scope; the filter then selects it and the request goes to
  the user's pod. If the control plane cannot answer, the filter selects the fallback scope:
  Envoy balances the request (by the uid's hash for the default strategy).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from importlib.resources import files

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
    ClusterLbSubsetConfigLbSubsetSelectorLbSubsetSelectorFallbackPolicy,
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
    DataSource,
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
    HealthCheck,
    HealthCheckHttpHealthCheck,
    HealthStatus,
    Metadata,
    SocketAddress,
    TransportSocket,
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
    DirectResponseAction,
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
from envoy_data_plane.envoy.extensions.filters.http.lua.v3 import Lua, LuaPerRoute
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpFilter,
    ScopedRds,
    ScopedRoutes,
    ScopedRoutesScopeKeyBuilder,
    ScopedRoutesScopeKeyBuilderFragmentBuilder,
    ScopedRoutesScopeKeyBuilderFragmentBuilderHeaderValueExtractor,
)
from envoy_data_plane.envoy.extensions.health_check.event_sinks.file.v3 import (
    HealthCheckEventFileSink,
)
from envoy_data_plane.envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
    HeaderMutation as EarlyHeaderMutation,
)
from envoy_data_plane.envoy.extensions.retry.host.previous_hosts.v3 import (
    PreviousHostsPredicate,
)
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    CommonTlsContext,
    SdsSecretConfig,
    UpstreamTlsContext,
)
from envoy_data_plane.google.protobuf import Any, Struct, Value

from controlplane.domain import Pod, PodState, Service, ServiceKey, Strategy
from controlplane.domain.envoy_settings import EnvoyClusterSettings
from controlplane.xds.naming import (
    BALANCED_ROUTE_NAME,
    ENVOY_CA_SECRET,
    ENVOY_CERT_SECRET,
    GROUP_HEADER,
    LISTENER_NAME,
    MISS_PATH,
    MISS_PATH_CLUSTER,
    MOVED_HEADER,
    MOVED_SCRIPT,
    POD_SUBSET_KEY,
    SCOPE_KEY_HEADER,
    SCOPED_ROUTES_NAME,
    SERVICE_HEADER,
    TLS_TRANSPORT_SOCKET,
    UID_HEADER,
    cluster_name,
    placement_route_name,
    service_domains,
)
from controlplane.xds.scopes import FALLBACK_KEY, key_format

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SCOPED = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
# The order ADS pushes in, so Envoy never sees a reference before what it references. Routes
# go before scopes: a RouteConfiguration Envoy holds changes (a pod's epoch) before scopes
# re-point users at it; a new one goes when Envoy asks for it, after the scope naming it.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED)

_LB_POLICY = {
    Strategy.ROUND_ROBIN: ClusterLbPolicy.ROUND_ROBIN,
    Strategy.WEIGHTED_ROUND_ROBIN: ClusterLbPolicy.ROUND_ROBIN,  # weights ride on the endpoints
    Strategy.LEAST_CONNECTIONS: ClusterLbPolicy.LEAST_REQUEST,
    Strategy.LEAST_RESPONSE_TIME: ClusterLbPolicy.LEAST_REQUEST,
    Strategy.POWER_OF_TWO: ClusterLbPolicy.LEAST_REQUEST,  # Envoy's default: best of two
    Strategy.BOUNDED_HASH: ClusterLbPolicy.RING_HASH,
}
_HASHED = frozenset({ClusterLbPolicy.RING_HASH, ClusterLbPolicy.MAGLEV})
# The miss path's filter; its name is also where routes keep the metadata it reads.
LUA_FILTER = "envoy.filters.http.lua"
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
    # A failed pod's endpoint update (its label gone) changes no host, and Envoy would hold
    # such updates back from its workers for the merge window (1 s by default): meanwhile the
    # retries of its users' requests in flight still go to the dead pod and run out.
    common = ClusterCommonLbConfig(
        consistent_hashing_lb_config=hashing, update_merge_window=timedelta(0)
    )
    # One subset per labelled pod, for its bound users' routes. A single-host subset is a
    # lookup with no balancer behind it, and it ignores the host's health on purpose: a
    # draining pod keeps its users, and a failed pod loses its label, not its health flag.
    # A route naming a vanished label fails (no host) rather than land on a pod Envoy picks:
    # the user would be served there, then moved by the control plane (a double move).
    # Routes naming no label (the balanced one) get the cluster's own balancer.
    subsets = ClusterLbSubsetConfig(
        fallback_policy=ClusterLbSubsetConfigLbSubsetFallbackPolicy.ANY_ENDPOINT,
        subset_selectors=[
            ClusterLbSubsetConfigLbSubsetSelector(
                keys=[POD_SUBSET_KEY],
                single_host_per_subset=True,
                fallback_policy=ClusterLbSubsetConfigLbSubsetSelectorLbSubsetSelectorFallbackPolicy.NO_FALLBACK,
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
    return Metadata(filter_metadata={LB_METADATA: _struct({POD_SUBSET_KEY: pod_label(index)})})


def _struct(values: Mapping[str, str]) -> Struct:
    return Struct(fields={k: Value(string_value=v) for k, v in values.items()})


def build_load_assignment(
    key: ServiceKey, pods: Sequence[Pod], weights: Mapping[int, int]
) -> ClusterLoadAssignment:
    """Every pod of a service that has an address as an endpoint with its balancer weight and
    health status, and its subset label while its bound users may reach it."""
    reachable = _reachable(pods)
    return ClusterLoadAssignment(
        cluster_name=cluster_name(key),
        endpoints=[
            LocalityLbEndpoints(
                lb_endpoints=[
                    LbEndpoint(
                        endpoint=Endpoint(
                            address=_address(host, pod.port),
                            hostname=f"pod-{pod.index}",
                        ),
                        health_status=health_status(pod.state),
                        metadata=_pod_metadata(pod.index) if pod.keeps_bound_users else None,
                        load_balancing_weight=weights[pod.index],
                    )
                    for pod, host in reachable
                ]
            )
        ]
        if reachable
        else [],
    )


def _reachable(pods: Sequence[Pod]) -> list[tuple[Pod, str]]:
    """The pods that have an address, by index: EDS takes addresses only, so a pod whose name
    does not resolve is left out (it is down, and keeps no users)."""
    return [(pod, pod.host) for pod in sorted(pods, key=lambda p: p.index) if pod.host is not None]


def load_assignment_json(
    key: ServiceKey, pods: Sequence[Pod], weights: Mapping[int, int]
) -> dict[str, object]:
    """``build_load_assignment``'s message as protobuf JSON, built directly.

    Endpoints change with every weight and health change, and betterproto2's ``to_dict``
    costs milliseconds per call; the tests hold the two forms equal.
    """
    endpoints: list[dict[str, object]] = []
    for pod, host in _reachable(pods):
        endpoint: dict[str, object] = {
            "endpoint": {
                "address": {"socketAddress": {"address": host, "portValue": pod.port}},
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


def build_balanced_route(services: Iterable[Service]) -> RouteConfiguration:
    """Every service balanced by Envoy: the routes of requests with no user, and of users the
    control plane could not place (it is away). The miss path's Lua filter also reads which
    service (and uid header) a request is for from here."""
    hosts = []
    for service in sorted(services, key=lambda s: s.key):
        action = _route_action(service)
        action.retry_policy = _retry_policy(service, to_another_pod=True)
        about = {"service": str(service.key), "uid_header": service.settings.uid_header}
        hosts.append(_virtual_host(service, action, about))
    return RouteConfiguration(name=BALANCED_ROUTE_NAME, virtual_hosts=hosts)


def build_placement_route(
    services: Mapping[str, Service],
    placement: tuple[tuple[str, int], ...],
    epochs: Mapping[tuple[str, int], int] | None = None,
    gone: Collection[tuple[str, int]] = (),
) -> RouteConfiguration:
    """The routes of the users bound to ``placement``'s pods: each to its pod's subset.

    All users of a pod share this RouteConfiguration (their scopes name it), so a user's
    arrival never changes it. A request for a service not in the placement finds no virtual
    host, and the miss path places the user there too. A service with an epoch header gets
    it set to the pod's epoch (``epochs``, by (cluster, index); 0 if absent), replacing any
    the client sent.

    A pod in ``gone`` (by (cluster, index)) holds its users no more: its route asks the miss
    path where each user is now (``_moved_host``), so a failover's users are served by their
    new pods before each one's scope is re-pointed.
    """
    hosts = []
    for cluster, index in placement:
        service = services.get(cluster)
        if service is None:
            continue  # removed meanwhile: its users' scopes are re-pointed next
        if (cluster, index) in gone:
            hosts.append(_moved_host(service))
            continue
        action = _route_action(service)
        action.metadata_match = _pod_metadata(index)
        host = _virtual_host(service, action, {"pod": pod_label(index)})
        header = service.settings.failover.epoch_header
        if header is not None:
            epoch = (epochs or {}).get((cluster, index), 0)
            host.request_headers_to_add = [_set_header(header, str(epoch))]
        hosts.append(host)
    return RouteConfiguration(name=placement_route_name(placement), virtual_hosts=hosts)


def _moved_host(service: Service) -> VirtualHost:
    """The virtual host of a service whose pod no longer holds the users sent here: the Lua
    filter's script for it (``MOVED_SCRIPT``) asks the control plane where the user is bound
    now and selects that scope. Until the pod's failover has moved the user, or when the
    control plane cannot say, the route's own answer stands: 503, never a pod Envoy picks
    (a user served there would move twice, its state split)."""
    about = {
        "service": str(service.key),
        "uid_header": service.settings.uid_header,
        "moved": "true",
    }
    route = Route(
        match=RouteMatch(prefix="/"),
        direct_response=DirectResponseAction(
            status=503, body=DataSource(inline_string="the user's pod is gone; ask again\n")
        ),
        metadata=Metadata(filter_metadata={LUA_FILTER: _struct(about)}),
        typed_per_filter_config={LUA_FILTER: Any.pack(LuaPerRoute(name=MOVED_SCRIPT))},
    )
    return VirtualHost(
        name=cluster_name(service.key),
        domains=[*service_domains(service.key), *service.settings.domains],
        routes=[route],
    )


def _set_header(name: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(
        header=HeaderValue(key=name, value=value),
        append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _virtual_host(service: Service, action: RouteAction, about: dict[str, str]) -> VirtualHost:
    """A service's virtual host with one route; ``about`` is route metadata for the Lua filter,
    which the route turns off (Envoy then does not even create it for the request)."""
    route = Route(
        match=RouteMatch(prefix="/"),
        route=action,
        metadata=Metadata(filter_metadata={LUA_FILTER: _struct(about)}),
        typed_per_filter_config={LUA_FILTER: Any.pack(FilterConfig(disabled=True))},
    )
    return VirtualHost(
        name=cluster_name(service.key),
        domains=[*service_domains(service.key), *service.settings.domains],
        routes=[route],
        retry_policy=_retry_policy(service),
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
    pod has failed its label is gone and the backed-off retry finds no pod (503): a user is
    served only by the pod its binding names.
    Retry plugins are made afresh for every request (about 3% of a proxy core measured here),
    so only balanced routes ask for another pod.
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


def build_listener(
    address: str, port: int, source: ConfigSource, uid_headers: Sequence[str], group: str
) -> Listener:
    """The proxy listener: HTTP, a scope per user (scoped RDS), the miss path's Lua filter."""
    manager = HttpConnectionManager(
        stat_prefix="stateful_route",
        scoped_routes=ScopedRoutes(
            name=SCOPED_ROUTES_NAME,
            scope_key_builder=ScopedRoutesScopeKeyBuilder(
                fragments=[
                    ScopedRoutesScopeKeyBuilderFragmentBuilder(
                        header_value_extractor=ScopedRoutesScopeKeyBuilderFragmentBuilderHeaderValueExtractor(
                            name=SCOPE_KEY_HEADER, index=0
                        )
                    )
                ]
            ),
            rds_config_source=source,
            scoped_rds=ScopedRds(scoped_rds_config_source=source),
        ),
        # Before any route is chosen, from the uid header(s): the key of the user's scope.
        # It overwrites a client's own copy, so nobody picks another user's routes.
        early_header_mutation_extensions=[
            TypedExtensionConfig(
                name="scope-key",
                typed_config=Any.pack(
                    EarlyHeaderMutation(
                        mutations=[
                            MutationRulesHeaderMutation(
                                append=HeaderValueOption(
                                    header=HeaderValue(
                                        key=SCOPE_KEY_HEADER, value=key_format(uid_headers)
                                    ),
                                    append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
                                )
                            )
                        ]
                    )
                ),
            )
        ],
        # The Lua filter runs only where no route turns it off: a user with no scope yet.
        http_filters=[
            HttpFilter(name=LUA_FILTER, typed_config=Any.pack(_miss_path_lua(group))),
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


def _miss_path_lua(group: str) -> Lua:
    """The miss path's script, and the one the routes of gone pods name (``MOVED_SCRIPT``)."""
    template = files("controlplane.xds").joinpath("misspath.lua").read_text()
    constants = {
        "KEY_HEADER": SCOPE_KEY_HEADER,
        "FALLBACK_KEY": FALLBACK_KEY,
        "CLUSTER": MISS_PATH_CLUSTER,
        "PATH": MISS_PATH,
        "SERVICE_HEADER": SERVICE_HEADER,
        "UID_HEADER": UID_HEADER,
        "GROUP_HEADER": GROUP_HEADER,
        "MOVED_HEADER": MOVED_HEADER,
        "GROUP": group,
    }
    code = template
    for name, value in constants.items():
        code = code.replace(f"@{name}@", json.dumps(value))  # a JSON string is a Lua string
    timeout_ms = str(round(MISS_PATH_TIMEOUT_S * 1000))
    code = code.replace("@TIMEOUT_MS@", timeout_ms)
    return Lua(
        default_source_code=DataSource(inline_string=code.replace("@ENTRY@", "on_miss")),
        source_codes={MOVED_SCRIPT: DataSource(inline_string=code.replace("@ENTRY@", "on_moved"))},
    )


def build_miss_path_cluster(host: str, port: int, *, tls: bool = False) -> Cluster:
    """Where Envoy's miss path calls: the control plane (a name or an address); with ``tls``
    over the mutual TLS of Envoy's own xDS connection, whose certificate and CA its bootstrap
    holds as static secrets (``ENVOY_CERT_SECRET``, ``ENVOY_CA_SECRET``)."""
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
        transport_socket=_envoy_client_tls() if tls else None,
    )


def _envoy_client_tls() -> TransportSocket:
    context = UpstreamTlsContext(
        common_tls_context=CommonTlsContext(
            tls_certificate_sds_secret_configs=[SdsSecretConfig(name=ENVOY_CERT_SECRET)],
            validation_context_sds_secret_config=SdsSecretConfig(name=ENVOY_CA_SECRET),
        )
    )
    return TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=Any.pack(context))


def _address(host: str, port: int) -> Address:
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
