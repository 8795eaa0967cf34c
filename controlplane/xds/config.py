"""Settings of the xDS server: one pydantic model, built once and passed down."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controlplane.tls import ServerTlsSettings

_GROUP_KEY = re.compile(r"^(id|cluster|metadata\.[A-Za-z0-9_.-]+)$")


class NodeGroupSettings(BaseModel):
    """What one group of Envoys gets that another may not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listener_address: str = "127.0.0.1"
    listener_port: int = Field(default=10000, ge=1, le=65535)
    # Only these namespaces' services; None: every service.
    namespaces: frozenset[str] | None = None


class XdsTlsSettings(ServerTlsSettings):
    """xDS and the miss path over mutual TLS: every Envoy shows a certificate of this CA."""

    client_ca_file: Path
    # Which of its node's values an Envoy's certificate must name (a DNS or URI SAN), so that
    # one Envoy cannot read another group's configuration: "node_group" (the group its node
    # claims, as node_group_key reads it), "node_id", or "none" (any certificate of the CA).
    client_identity: Literal["node_group", "node_id", "none"] = "node_group"


class XdsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Which part of Envoy's node picks its group: "cluster", "id" or "metadata.<key>".
    node_group_key: str = "cluster"
    # Groups not listed here get ``default_group``.
    default_group: NodeGroupSettings = NodeGroupSettings()
    node_groups: dict[str, NodeGroupSettings] = Field(default_factory=dict)

    # None: plain gRPC and HTTP (meant for loopback).
    tls: XdsTlsSettings | None = None

    # Where Envoy's miss path (its Lua filter) calls the control plane: by default the address
    # the xDS HTTP listener is bound to; set these when Envoy sees the control plane elsewhere
    # (a container name, a service IP).
    miss_path_host: str | None = None
    miss_path_port: int | None = Field(default=None, ge=1, le=65535)

    # Where Envoy writes its active health-check events, for services that enable Envoy's own
    # checks (EnvoyClusterSettings.active_health_check); the control plane follows the same
    # file (signals.health_event_log).
    health_event_log_path: str | None = None

    # Changes arriving within this window become one snapshot.
    debounce_s: float = Field(default=0.005, ge=0, le=1.0)
    # Snapshots follow each other at least this far apart (a lone change still waits only
    # debounce_s): how Envoy's pushes are batched while users stream in.
    min_rebuild_interval_s: float = Field(default=0.05, ge=0, le=1.0)

    # Users' scope changes are pushed together, at most once per interval: at least this, and
    # long enough that Envoy spends at most this share of its main thread applying them (each
    # push costs it ~25 ns per scope it holds: 2.5 ms at 100,000 users). At 100,000 users and
    # the defaults: one push per 42 ms; a new user's first request does not wait for it.
    scope_push_min_interval_s: float = Field(default=0.005, ge=0, le=1.0)
    scope_push_cpu_share: float = Field(default=0.06, gt=0, le=1.0)

    # REST: Envoy's bootstrap names the control plane's cluster and sets these timings; the EDS
    # and RDS config sources we hand out must repeat them.
    rest_xds_cluster: str = "xds_cluster"
    rest_refresh_delay_s: float = Field(default=0.01, gt=0)
    rest_request_timeout_s: float = Field(default=30.0, gt=0)
    # A long-poll is answered 304 after this long; it must end before Envoy gives up on it.
    # 0: plain polling (an up-to-date request gets its 304 at once).
    long_poll_hold_s: float = Field(default=20.0, ge=0)
    # Parsed REST request bodies kept, keyed by the raw body: Envoy repeats its 77 KB node in
    # every request, one body per subscription (each EDS cluster is one). Costs up to ~80 KB each.
    rest_parse_cache_size: int = Field(default=512, ge=0)
    # A REST client with nothing in flight for this long counts as gone.
    rest_client_expiry_s: float = Field(default=60.0, gt=0)

    @field_validator("node_group_key")
    @classmethod
    def _known_group_key(cls, value: str) -> str:
        if not _GROUP_KEY.fullmatch(value):
            raise ValueError("node_group_key must be 'cluster', 'id' or 'metadata.<key>'")
        return value

    @model_validator(mode="after")
    def _hold_ends_before_envoy_gives_up(self) -> Self:
        if self.long_poll_hold_s >= self.rest_request_timeout_s:
            raise ValueError("long_poll_hold_s must be shorter than rest_request_timeout_s")
        return self

    def group(self, name: str) -> NodeGroupSettings:
        return self.node_groups.get(name, self.default_group)
