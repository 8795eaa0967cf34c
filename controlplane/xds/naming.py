"""The names our Envoy resources carry, all derived here and nowhere else.

- Cluster and ClusterLoadAssignment of a service: ``{namespace}/{name}`` (what ``str(ServiceKey)``
  prints). Names hold only ``[A-Za-z0-9._-]``, so the ``/`` keeps ``a.b/c`` and ``a/b.c`` apart.
- Virtual host of a service: the same name; it answers to the Host ``{name}.{namespace}``
  (with any port), the way a Kubernetes client names a service.
- The one Listener and its scoped routes: ``stateful-route``.
- RouteConfigurations: ``stateful-route.balanced`` (every service, balanced by Envoy: requests
  with no user, and users the control plane could not place) and one per *placement*, the pods
  a set of users is bound to: ``stateful-route:<cluster>=<pod>[;<cluster>=<pod>...]``.
- Scopes (ScopedRouteConfiguration): named by their key (``xds/scopes.py``).
- The control plane's own cluster for the miss path: ``stateful-route.miss-path``.
"""

from __future__ import annotations

from controlplane.domain import ServiceKey

LISTENER_NAME = "stateful-route"
SCOPED_ROUTES_NAME = "stateful-route"
BALANCED_ROUTE_NAME = "stateful-route.balanced"
# The control plane as the miss path's server; no "/", so no service cluster can take it.
MISS_PATH_CLUSTER = "stateful-route.miss-path"
# The Lua filter's script that the route of a pod holding its users no more names.
MOVED_SCRIPT = "stateful-route.moved"
MISS_PATH = "/stateful-route/miss"
# With xds.tls, Envoy's bootstrap holds its client certificate and the control plane's CA as
# static secrets of these names; the miss path's cluster refers to them (runtime/envoy.py).
ENVOY_CERT_SECRET = "stateful-route.envoy-cert"
ENVOY_CA_SECRET = "stateful-route.ca"
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
# Written by Envoy's early header mutation from the uid header(s), before any route is chosen
# (a client's own copy is overwritten): the scope key Envoy selects a user's routes by.
SCOPE_KEY_HEADER = "x-stateful-route-key"
# The endpoint metadata key (under "envoy.lb") of a pod's subset, named by its users' routes.
POD_SUBSET_KEY = "pod"
# What the miss path's Lua filter tells the control plane (on its own call, never upstream).
SERVICE_HEADER = "x-stateful-route-service"
UID_HEADER = "x-stateful-route-uid"
GROUP_HEADER = "x-stateful-route-group"
# Set on the call of a gone pod's route: only where the user is bound now is asked for (its
# pod's failover moves it; the call must not place it first).
MOVED_HEADER = "x-stateful-route-moved"


def cluster_name(key: ServiceKey) -> str:
    """The Envoy cluster (and load assignment, and virtual host) name of a service."""
    return f"{key.namespace}/{key.name}"


def service_domains(key: ServiceKey) -> list[str]:
    """The Host header values that reach a service through the listener."""
    host = f"{key.name}.{key.namespace}"
    return [host, f"{host}:*"]


def placement_route_name(placement: tuple[tuple[str, int], ...]) -> str:
    """The RouteConfiguration of the users bound to these (cluster, pod index) pairs."""
    return "stateful-route:" + ";".join(f"{cluster}={pod}" for cluster, pod in placement)
