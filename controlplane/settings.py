"""One Settings object for the whole control plane, built once and passed down.

Sources, later ones winning: defaults, a YAML or TOML file (``--config``), environment
variables ``STATEFUL_ROUTE_<SECTION>__<FIELD>`` (e.g. ``STATEFUL_ROUTE_REDIS__URL``), flags.
"""

from __future__ import annotations

import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from controlplane.admin.config import AdminSettings
from controlplane.admin.models import PodSpec
from controlplane.discovery.config import DiscoverySettings
from controlplane.domain import ServiceSettings
from controlplane.domain.models import Namespace, ServiceName
from controlplane.errors import InvalidInput
from controlplane.store.config import RedisSettings, RedisTopology
from controlplane.xds.config import XdsSettings

__all__ = ["RedisSettings", "RedisTopology", "Settings"]


class ListenSettings(BaseModel):
    """Where the control plane listens. Loopback by default: expose it on purpose."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    admin_port: int = Field(default=9901, ge=0, le=65535)
    xds_rest_port: int = Field(default=18000, ge=0, le=65535)
    xds_grpc_port: int = Field(default=18001, ge=0, le=65535)


class UpkeepSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    view_ttl_s: float = Field(default=1.0, gt=0)
    last_seen_flush_s: float = Field(default=1.0, gt=0)
    idle_expiry_every_s: float = Field(default=60.0, gt=0)
    # Envoy routes a user by itself for this long after the control plane last saw it.
    route_window_s: float = Field(default=600.0, gt=0)
    route_expiry_every_s: float = Field(default=5.0, gt=0)
    # Replicas: the leader lease lasts this long unless renewed (a third of it apart); a dead
    # leader is replaced within one period.
    leader_lease_s: float = Field(default=3.0, ge=0.5)
    # How often the leader looks for users left on failed pods.
    reconcile_every_s: float = Field(default=0.5, gt=0)
    # How often binds made while Redis was unreachable are retried.
    replay_binds_every_s: float = Field(default=1.0, gt=0)
    health_checks: bool = True


class SignalsSettings(BaseModel):
    """What the control plane reads from Envoy: event logs on a disk it shares with Envoy (a
    sidecar), and over the network the load reports and admin APIs of any Envoy."""

    model_config = ConfigDict(extra="forbid")

    # Envoy's cluster_manager.outlier_detection.event_log_path.
    outlier_event_log: Path | None = None
    # Envoy's envoy.health_check.event_sink.file path.
    health_event_log: Path | None = None
    # How often the logs are looked at: a pod Envoy ejected is failed over this much later.
    log_poll_s: float = Field(default=0.02, gt=0)
    # Envoy admin endpoints polled for per-pod load (rq_active, cx_active) and ejections
    # (/clusters health flags), every stats_poll_s: these, and with poll_discovered_envoys the
    # ones connected Envoys name in their node metadata (admin_url). Off unless operators let
    # the control plane reach Envoys' admin APIs.
    envoy_admin_urls: list[str] = Field(default_factory=list)
    poll_discovered_envoys: bool = False
    stats_poll_s: float = Field(default=2.0, gt=0)
    # Load reports (LRS, served on the xDS gRPC port to Envoys whose bootstrap asks for it):
    # Envoy reports every interval; a dead pod is failed one or two intervals after its death
    # (the interval it died in also holds its last successes).
    load_reports: bool = True
    load_report_interval_s: float = Field(default=0.5, ge=0.05, le=60)
    # An Envoy sees a pod failing when this share of its requests there failed in one
    # interval; the pod fails when more Envoys see it failing than serving, with this many
    # errors between them.
    load_report_error_ratio: float = Field(default=0.5, gt=0, le=1)
    load_report_min_errors: int = Field(default=2, ge=1)


class ServiceConfig(BaseModel):
    """A service (and its pods) declared in the config file, registered at start-up."""

    model_config = ConfigDict(extra="forbid")

    namespace: Namespace
    name: ServiceName
    settings: ServiceSettings = ServiceSettings()
    # Each at an address (host) or by DNS name (name; its index may come from the name).
    pods: list[PodSpec] = Field(default_factory=list)


class Settings(BaseSettings):
    # hide_input_in_errors: an error names the field, never the value (it may be a secret).
    model_config = SettingsConfigDict(
        env_prefix="STATEFUL_ROUTE_",
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,
    )

    redis: RedisSettings = RedisSettings()
    listen: ListenSettings = ListenSettings()
    admin: AdminSettings = AdminSettings()
    xds: XdsSettings = XdsSettings()
    upkeep: UpkeepSettings = UpkeepSettings()
    signals: SignalsSettings = SignalsSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    services: list[ServiceConfig] = Field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> Settings:
        """Settings from an optional YAML/TOML file, the environment, then ``overrides``."""
        token = _CONFIG_FILE.set(Path(path) if path else None)
        try:
            return cls(**overrides)
        finally:
            _CONFIG_FILE.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_FILE.get()
        if path is None:
            return init_settings, env_settings
        read_config_file(path)  # pydantic-settings reads a missing or broken file as empty
        file: PydanticBaseSettingsSource = (
            TomlConfigSettingsSource(settings_cls, toml_file=path)
            if path.suffix == ".toml"
            else YamlConfigSettingsSource(settings_cls, yaml_file=path)
        )
        return init_settings, env_settings, file


# The file named by ``Settings.load(path)``, below the environment and flags.
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("config_file", default=None)


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's sections, or an InvalidInput that says what is wrong with it."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"config file {path} is not valid: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(f"config file {path} must hold a mapping of sections")
    return data
