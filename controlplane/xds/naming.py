"""The names our Envoy resources carry, all derived here and nowhere else.

- Cluster and ClusterLoadAssignment of a service: ``{namespace}/{name}`` (what ``str(ServiceKey)``
  prints). Names hold only ``[A-Za-z0-9._-]``, so the ``/`` keeps ``a.b/c`` and ``a/b.c`` apart.
- Virtual host of a service: the same name; it answers to the Host ``{name}.{namespace}``
  (with any port), the way a Kubernetes client names a service.
- The one Listener and the one RouteConfiguration: ``stateful-route``.
"""

from __future__ import annotations

from controlplane.domain import ServiceKey

LISTENER_NAME = "stateful-route"
ROUTE_CONFIG_NAME = "stateful-route"
# Endpoint metadata namespace Envoy's subset load balancer reads, and our key in it.
LB_METADATA_NAMESPACE = "envoy.lb"
POD_METADATA_KEY = "pod"


def cluster_name(key: ServiceKey) -> str:
    """The Envoy cluster (and load assignment, and virtual host) name of a service."""
    return f"{key.namespace}/{key.name}"


def service_domains(key: ServiceKey) -> list[str]:
    """The Host header values that reach a service through the listener."""
    host = f"{key.name}.{key.namespace}"
    return [host, f"{host}:*"]
