"""The names our Envoy resources carry, all derived here and nowhere else.

- Cluster and ClusterLoadAssignment of a service: ``{namespace}/{name}`` (what ``str(ServiceKey)``
  prints). Names hold only ``[A-Za-z0-9._-]``, so the ``/`` keeps ``a.b/c`` and ``a/b.c`` apart.
- Each pod also has a cluster of its own, ``{namespace}/{name}/pod-{index}`` (that pod alone),
  and the cluster its bound users' routes name, ``{namespace}/{name}/pod-{index}/sticky`` (an
  aggregate: that pod, else the service's cluster).
- Virtual host of a service: the same name; it answers to the Host ``{name}.{namespace}``
  (with any port), the way a Kubernetes client names a service.
- The one Listener and the one RouteConfiguration: ``stateful-route``.
- The control plane's own cluster for the miss path: ``stateful-route.miss-path``.
"""

from __future__ import annotations

from controlplane.domain import ServiceKey

LISTENER_NAME = "stateful-route"
ROUTE_CONFIG_NAME = "stateful-route"
# The control plane as Envoy's ext_authz server; no "/", so no service cluster can take it.
MISS_PATH_CLUSTER = "stateful-route.miss-path"
MISS_PATH_PREFIX = "/ext_authz"
# Set by a user's route, or by the miss path's answer: base64 of the pod's "ip:port", read by
# Envoy's stateful_session filter. Stripped from client requests before routing.
SESSION_HEADER = "x-stateful-route-host"
# Set by a service's fallback route so the miss path knows the service. Stripped likewise.
SERVICE_HEADER = "x-stateful-route-service"


def cluster_name(key: ServiceKey) -> str:
    """The Envoy cluster (and load assignment, and virtual host) name of a service."""
    return f"{key.namespace}/{key.name}"


def pod_cluster_name(key: ServiceKey, index: int) -> str:
    """The cluster (and load assignment) holding pod ``index`` alone."""
    return f"{cluster_name(key)}/pod-{index}"


def sticky_cluster_name(key: ServiceKey, index: int) -> str:
    """The aggregate cluster the routes of pod ``index``'s users name."""
    return f"{pod_cluster_name(key, index)}/sticky"


def service_of(cluster: str) -> ServiceKey | None:
    """The service behind one of our cluster names, if it is one."""
    namespace, slash, rest = cluster.partition("/")
    return ServiceKey(namespace, rest.partition("/")[0]) if slash else None


def service_domains(key: ServiceKey) -> list[str]:
    """The Host header values that reach a service through the listener."""
    host = f"{key.name}.{key.namespace}"
    return [host, f"{host}:*"]
