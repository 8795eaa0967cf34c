"""Per-service Envoy knobs: how Envoy itself protects and balances a service's pods.

These shape the Cluster and the routes xDS builds for the service. Defaults are safe for a
stateful service: no retries onto another pod after a request reached one (its state is there),
outlier detection on, Envoy's own active checks off (the control plane's checks feed each
endpoint's health status instead).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Envoy keeps these in uint32 fields; durations far beyond any sane value are refused too, so
# no setting can make a resource Envoy (or its Duration type) cannot hold.
UINT32 = 2**32 - 1
DAY_S = 86_400.0
ENVOY_MAX_EJECTION_S = 300.0


class OutlierDetectionSettings(BaseModel):
    """Passive ejection of pods that answer with errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    consecutive_5xx: int = Field(default=5, ge=1, le=UINT32)
    consecutive_gateway_failure: int = Field(default=5, ge=1, le=UINT32)
    # Connection failures (refused, reset before a response) are counted on their own: a
    # pod that refuses connections is gone, so a couple eject it before a retry goes there.
    consecutive_local_origin_failure: int = Field(default=2, ge=1, le=UINT32)
    interval_s: float = Field(default=10.0, gt=0, le=DAY_S)
    base_ejection_time_s: float = Field(default=30.0, gt=0, le=DAY_S)
    max_ejection_percent: int = Field(default=50, ge=0, le=100)

    @property
    def max_ejection_s(self) -> float:
        """The longest Envoy holds a pod ejected: its max_ejection_time, left at its default
        (300 s, or the base ejection time if that is longer)."""
        return max(ENVOY_MAX_EJECTION_S, self.base_ejection_time_s)


class ActiveHealthCheckSettings(BaseModel):
    """Envoy's own HTTP probes of every pod (opt-in)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(default="/health", pattern=r"^/[\x21-\x7e]*$")
    interval_s: float = Field(default=5.0, gt=0, le=DAY_S)
    timeout_s: float = Field(default=1.0, gt=0, le=DAY_S)
    healthy_threshold: int = Field(default=2, ge=1, le=UINT32)
    unhealthy_threshold: int = Field(default=3, ge=1, le=UINT32)


class CircuitBreakerSettings(BaseModel):
    """Limits on what Envoy sends to the whole service at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_connections: int = Field(default=1024, ge=1, le=UINT32)
    max_pending_requests: int = Field(default=1024, ge=1, le=UINT32)
    max_requests: int = Field(default=1024, ge=1, le=UINT32)
    # Envoy's own default (3) fails all but three of the retries a dead pod causes at once.
    max_retries: int = Field(default=1024, ge=0, le=UINT32)


class RetrySettings(BaseModel):
    """Envoy's retry policy on the service's routes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Only failures before a pod saw the request: retrying a request a pod has started could
    # apply it twice to that pod's state.
    retry_on: str = Field(
        default="connect-failure,refused-stream", pattern=r"^[a-z0-9-]+(,[a-z0-9-]+)*$"
    )
    # A bound user's tries go to its pod alone: they ride out a pod that refused a connection
    # for a moment, and once the control plane has failed the pod over (tens of ms after
    # Envoy ejects it) a try finds no pod and the request fails at once (never another pod).
    # Envoy waits a random time below (2^n - 1) x back_off_base_s (at most 10x) before retry
    # n. A pod that stays unreachable (no control plane) costs 1.5 s on average.
    num_retries: int = Field(default=5, ge=0, le=10)
    per_try_timeout_s: float | None = Field(default=None, gt=0, le=DAY_S)
    back_off_base_s: float = Field(default=0.1, gt=0, le=DAY_S)


class EnvoyClusterSettings(BaseModel):
    """Everything Envoy-specific about one service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout_s: float = Field(default=1.0, gt=0, le=DAY_S)
    # Whole-request timeout on the service's routes; 0 disables it.
    route_timeout_s: float = Field(default=15.0, ge=0, le=DAY_S)
    outlier_detection: OutlierDetectionSettings | None = OutlierDetectionSettings()
    active_health_check: ActiveHealthCheckSettings | None = None
    circuit_breakers: CircuitBreakerSettings = CircuitBreakerSettings()
    retry: RetrySettings = RetrySettings()
