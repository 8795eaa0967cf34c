"""The names our Envoy resources carry, all derived here and nowhere else.

- Cluster and ClusterLoadAssignment of a service: ``{namespace}/{name}`` (what ``str(ServiceKey)``
  prints). Names hold only ``[A-Za-z0-9._-]``, so the ``/`` keeps ``a.b/c`` and ``a/b.c`` apart.
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
# Set by the miss path's answer: base64 of the pod's "ip:port", read by Envoy's stateful_session
# filter. Stripped from client requests before routing.
SESSION_HEADER = "x-stateful-route-host"
# The endpoint metadata key (under "envoy.lb") of a pod's subset, named by its users' routes.
POD_SUBSET_KEY = "pod"
# Set by a service's fallback route so the miss path knows the service. Stripped likewise.
SERVICE_HEADER = "x-stateful-route-service"


def cluster_name(key: ServiceKey) -> str:
    """The Envoy cluster (and load assignment, and virtual host) name of a service."""
    return f"{key.namespace}/{key.name}"


def service_domains(key: ServiceKey) -> list[str]:
    """The Host header values that reach a service through the listener."""
    host = f"{key.name}.{key.namespace}"
    return [host, f"{host}:*"]
