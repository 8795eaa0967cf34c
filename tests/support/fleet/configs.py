"""What the fleet's processes are given: the replicas' settings and the Envoys' bootstraps."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.runtime.envoy import XDS_CLUSTER, bundled_bootstrap, load_bootstrap
from controlplane.runtime.stack import NAMESPACE, SERVICE, UID_HEADER
from controlplane.xds.protocol import ADMIN_URL_METADATA

# Every host has its own addresses: the same well-known ports on each.
REDIS_PORT = 6379
ADMIN_PORT = 9901
ENVOY_ADMIN_PORT = 9902
XDS_REST_PORT = 18000
XDS_GRPC_PORT = 18001
PROXY_PORT = 10000
POD_PORT = 8080
REPLICA_HOSTS = ("gw1", "gw2")
# How often the leader resolves the pods' names again: a rescheduled pod is found this fast.
RESOLVE_EVERY_S = 0.5
SERVICE_PATH = f"/api/v1/services/{NAMESPACE}/{SERVICE}"


@dataclass
class FleetConfig:
    pods: int = 4
    token: str = field(default_factory=lambda: os.urandom(16).hex())
    leader_lease_s: float = 1.5
    health_interval_s: float = 1.0
    # The sidecar replicas follow their Envoy's outlier event log and poll its admin API.
    log_tail: bool = True
    # Load reports from every Envoy, and the admin APIs Envoys name, polled.
    network_signals: bool = True
    load_report_interval_s: float = 0.2


def replica_settings(
    config: FleetConfig, address: str, redis_url: str, envoy_log: Path | None
) -> dict[str, Any]:
    """A replica's settings file on ``address``: pods by name, the sidecar signals if it
    shares ``envoy_log`` with its Envoy, the network ones if ``config`` says so."""
    pods = [{"name": f"pod-{i}", "port": POD_PORT} for i in range(config.pods)]
    signals: dict[str, Any] = {
        "load_reports": config.network_signals,
        "load_report_interval_s": config.load_report_interval_s,
        "poll_discovered_envoys": config.network_signals,
    }
    if envoy_log is not None:
        signals["outlier_event_log"] = str(envoy_log)
        signals["envoy_admin_urls"] = [f"http://{address}:{ENVOY_ADMIN_PORT}"]
    return {
        "redis": {"url": redis_url},
        "listen": {
            "host": address,
            "admin_port": ADMIN_PORT,
            "xds_rest_port": XDS_REST_PORT,
            "xds_grpc_port": XDS_GRPC_PORT,
        },
        "admin": {"token": config.token},
        "xds": {"default_group": {"listener_address": "0.0.0.0", "listener_port": PROXY_PORT}},
        "upkeep": {"leader_lease_s": config.leader_lease_s},
        "discovery": {"resolve_every_s": RESOLVE_EVERY_S},
        "signals": signals,
        "services": [
            {
                "namespace": NAMESPACE,
                "name": SERVICE,
                "settings": {
                    "uid_header": UID_HEADER,
                    "domains": ["*"],
                    "health_check": {
                        "interval_s": config.health_interval_s,
                        "timeout_s": 2.0,
                        "unhealthy_threshold": 3,
                        "healthy_threshold": 2,
                    },
                    "envoy": {
                        "outlier_detection": {
                            "consecutive_5xx": 3,
                            "consecutive_gateway_failure": 3,
                            "interval_s": 1.0,
                            "base_ejection_time_s": 10.0,
                            "max_ejection_percent": 100,
                        }
                    },
                },
                "pods": pods,
            }
        ],
    }


def envoy_bootstrap(
    fleet: FleetConfig,
    name: str,
    address: str,
    replicas: Sequence[str],
    envoy_log: Path | None,
) -> dict[str, Any]:
    """Envoy ``name``'s bootstrap on ``address``: ADS to the ``replicas`` (addresses) by
    priority, its outlier events to ``envoy_log`` if a sidecar replica reads them."""
    config = load_bootstrap(
        bundled_bootstrap("ads"), xds_port=XDS_GRPC_PORT, node_id=name, node_cluster="default"
    )
    config["admin"]["address"]["socket_address"].update(
        address=address, port_value=ENVOY_ADMIN_PORT
    )
    if fleet.network_signals:
        config["node"].setdefault("metadata", {})[ADMIN_URL_METADATA] = (
            f"http://{address}:{ENVOY_ADMIN_PORT}"
        )
    else:
        config.get("cluster_manager", {}).pop("load_stats_config", None)
    [xds] = [c for c in config["static_resources"]["clusters"] if c["name"] == XDS_CLUSTER]
    xds["load_assignment"]["endpoints"] = [
        {
            "priority": priority,
            "lb_endpoints": [
                {
                    "endpoint": {
                        "address": {
                            "socket_address": {
                                "address": replica,
                                "port_value": XDS_GRPC_PORT,
                            }
                        }
                    }
                }
            ],
        }
        for priority, replica in enumerate(replicas)
    ]
    # A dead replica leaves its priority within a second: the stream goes to the next.
    xds["health_checks"] = [
        {
            "timeout": "0.5s",
            "interval": "0.25s",
            "no_traffic_interval": "0.25s",  # a stream counts as no traffic: 60 s else
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "tcp_health_check": {},
        }
    ]
    if envoy_log is not None:
        config.setdefault("cluster_manager", {})["outlier_detection"] = {
            "event_log_path": str(envoy_log)
        }
    return config
