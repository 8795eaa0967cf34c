"""The domain's data: services, pods, load, bindings, failover events, route requests.

Pydantic models here are the shapes that cross an edge (HTTP, Redis, config); hot-path values
(bindings) are plain dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from controlplane.domain.envoy_settings import EnvoyClusterSettings
from controlplane.domain.health import ACCEPTS_NEW_USERS, KEEPS_BOUND_USERS, PodHealth, PodState
from controlplane.domain.names import (
    HOST_NAME_SCHEMA,
    NAME_SCHEMA,
    UID_SCHEMA,
    ServiceKey,
    check_host_name,
    check_name,
    check_uid,
)
from controlplane.errors import InvalidInput

# Checked by domain.names; described in JSON Schema by the same module's rules.
Namespace = Annotated[
    str, AfterValidator(lambda v: check_name("namespace", v)), WithJsonSchema(NAME_SCHEMA)
]
ServiceName = Annotated[
    str, AfterValidator(lambda v: check_name("service", v)), WithJsonSchema(NAME_SCHEMA)
]
Uid = Annotated[str, AfterValidator(check_uid), WithJsonSchema(UID_SCHEMA)]
PodIndex = Annotated[int, Field(ge=0, strict=True)]
# A pod's stable DNS name; the control plane resolves it to the address Envoy gets.
HostName = Annotated[str, AfterValidator(check_host_name), WithJsonSchema(HOST_NAME_SCHEMA)]


class Strategy(StrEnum):
    """How a new user is placed on a pod."""

    ROUND_ROBIN = "round_robin"
    LEAST_CONNECTIONS = "least_connections"
    WEIGHTED_ROUND_ROBIN = "weighted_round_robin"
    LEAST_RESPONSE_TIME = "least_response_time"
    POWER_OF_TWO = "power_of_two"
    BOUNDED_HASH = "bounded_hash"


class HealthCheckSettings(BaseModel):
    """The control plane's own active health checks of a service's pods."""

    model_config = ConfigDict(extra="forbid")

    # A path only: the probe must not be steerable to another host or carry extra headers.
    path: str = Field(default="/health", pattern=r"^/[\x21-\x7e]*$", max_length=1024)
    interval_s: float = Field(default=30.0, gt=0, le=86_400)
    timeout_s: float = Field(default=5.0, gt=0, le=3_600)
    healthy_threshold: int = Field(default=2, ge=1, le=1_000)
    unhealthy_threshold: int = Field(default=3, ge=1, le=1_000)


class OverLimit(StrEnum):
    """What a new user's request gets while its service takes no new users."""

    BALANCE = "balance"  # Envoy balances it over the pods; the user stays unbound
    REJECT = "reject"  # Envoy answers 429


class NewUserLimits(BaseModel):
    """What unknown users may create: a binding in Redis and a scope in every Envoy each.

    Bound users are never limited; a user past a limit is simply not bound (yet).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Bindings the service may hold at once (Redis: ~252 bytes each; Envoy: ~1 KB per user
    # seen within the route window).
    max_bound_users: int = Field(default=1_000_000, ge=1, le=1_000_000_000)
    # New bindings per second, shared by every replica (a token bucket in Redis) ...
    new_per_s: float = Field(default=1_000.0, gt=0, le=1_000_000)
    # ... of this many tokens: a burst this large binds at once.
    burst: int = Field(default=10_000, ge=1, le=10_000_000)
    over_limit: OverLimit = OverLimit.BALANCE


# The pod's failure reaches every Envoy (its label leaves the EDS) within this: a request
# routed to the pod before that may still wait a full route timeout after it.
FENCE_MARGIN_S = 1.0
# An HTTP header name as Envoy's routes use it: lower case, no pseudo-header.
HEADER_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"


class FailoverSettings(BaseModel):
    """How the control plane treats a pod that stops answering without going away."""

    model_config = ConfigDict(extra="forbid")

    # A pod that accepts connections but answers nothing (a pause, a stop, a long collection)
    # keeps its users this long from its first timeout; its requests wait meanwhile. A pod
    # that refuses connections is gone and fails over at once, whatever this says.
    hang_grace_s: float = Field(default=10.0, ge=0, le=3_600)
    # The request header in which Envoy passes the pod's epoch (None: no header). Every move
    # raises the epoch of the pods users move to, so a user's requests on its new pod carry
    # a higher epoch than any its old pod received before the move (docs/operations.md).
    epoch_header: str | None = Field(default=None, pattern=HEADER_NAME_PATTERN)

    def fence_s(self, route_timeout_s: float) -> float:
        """How long a hung pod's users wait, after it failed, before they move: until every
        request Envoy sent it has ended (its route timeout; with none, nothing bounds it)."""
        return route_timeout_s + FENCE_MARGIN_S


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = Strategy.BOUNDED_HASH
    uid_header: str = Field(default="x-uid", pattern=HEADER_NAME_PATTERN)
    # A binding unused this long is forgotten (the user is placed afresh next time).
    binding_idle_ttl_s: float = Field(default=7 * 24 * 3600.0, gt=0, le=10 * 365 * 86_400)
    # Bounded-load hashing: no pod takes more than this factor times its fair share.
    hash_balance_factor: float = Field(default=1.25, gt=1.0, le=4.0)
    health_check: HealthCheckSettings = HealthCheckSettings()
    failover: FailoverSettings = FailoverSettings()
    # Host headers that reach the service besides "<name>.<namespace>"; "*" makes it the
    # listener's default (one service per node group may take "*").
    domains: list[Annotated[str, Field(pattern=r"^(\*|(\*\.)?[A-Za-z0-9.-]+(:(\*|\d+))?)$")]] = (
        Field(default_factory=list, max_length=32)
    )
    envoy: EnvoyClusterSettings = EnvoyClusterSettings()
    new_users: NewUserLimits = NewUserLimits()

    @model_validator(mode="after")
    def _epoch_header_is_its_own(self) -> ServiceSettings:
        header = self.failover.epoch_header
        if header is not None and header in (self.uid_header, "host"):
            raise ValueError(f"failover.epoch_header may not be {header!r}")
        return self


class Service(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Namespace
    name: ServiceName
    settings: ServiceSettings = ServiceSettings()

    @property
    def key(self) -> ServiceKey:
        return ServiceKey(self.namespace, self.name)


class LoadReport(BaseModel):
    """What a pod (or Envoy's stats) says about its load."""

    model_config = ConfigDict(extra="forbid")

    active_requests: int = Field(default=0, ge=0)
    active_connections: int = Field(default=0, ge=0)
    response_time_ms: float = Field(default=0.0, ge=0)  # EWMA
    load_state: int = Field(default=0, ge=0, le=100)  # the seed's 0-100 load figure
    # Requests the pod has served, a counter (the dashboard charts its rate); None: this
    # reporter does not count them, and the last count reported is kept.
    requests_total: int | None = Field(default=None, ge=0)
    reported_at: float = 0.0

    def with_response_time(self, sample_ms: float, at: float) -> LoadReport:
        """This report with one response time folded into its average (the first sample
        is taken as is; then 0.8 of the average and 0.2 of the sample)."""
        previous = self.response_time_ms
        average = sample_ms if previous == 0 else 0.8 * previous + 0.2 * sample_ms
        return self.model_copy(update={"response_time_ms": average, "reported_at": at})


class EnvoyLoadShare(BaseModel):
    """Requests in flight to each pod (by index) over the Envoys that report to one control
    plane replica, as of ``at``; a pod's load sums every replica's share."""

    model_config = ConfigDict(extra="forbid")

    at: float
    in_flight: dict[int, int] = Field(default_factory=dict)


class Pod(BaseModel):
    """One replica of a service. Index 0 is a pod like any other.

    The index is the pod's identity: its users are bound to it and its history is kept under
    it, whatever its address. A pod given by ``name`` gets its ``host`` from DNS (None while
    the name does not resolve); a pod given by ``host`` keeps that address.
    """

    model_config = ConfigDict(extra="forbid")

    index: PodIndex
    host: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:_-]+$"
    )
    name: HostName | None = None
    port: int = Field(ge=1, le=65535)
    weight: int = Field(default=1, ge=1, le=1000)
    health: PodHealth = PodHealth()
    load: LoadReport = LoadReport()
    # Raised to the service's next epoch each time users move here (the epoch header).
    epoch: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _reachable(self) -> Pod:
        if self.host is None and self.name is None:
            raise ValueError("a pod needs a host (its address) or a name (resolved by DNS)")
        return self

    @property
    def state(self) -> PodState:
        return self.health.state

    @property
    def address(self) -> str | None:
        """``host:port``, or None while the pod's name does not resolve."""
        return None if self.host is None else f"{self.host}:{self.port}"

    def at_host(self, host: str | None) -> Pod:
        """This pod at another address. A new address is a new host to Envoy: an ejection of
        the old one is forgotten (Envoy would never un-eject the new one)."""
        if host == self.host:
            return self
        health = self.health.model_copy(update={"ejected_at": None})
        return self.model_copy(update={"host": host, "health": health})

    # A pod without an address (its name does not resolve) can serve nobody, whatever its state.
    @property
    def accepts_new_users(self) -> bool:
        return self.host is not None and self.health.state in ACCEPTS_NEW_USERS

    @property
    def keeps_bound_users(self) -> bool:
        return self.host is not None and self.health.state in KEEPS_BOUND_USERS

    def holds_users(self, now: float) -> bool:
        """Whether users bound here stay bound: it keeps them, or it is a hung pod that failed
        and whose fence has not ended (a request sent to it may still be answered)."""
        fence = self.health.fenced_until
        return self.keeps_bound_users or (fence is not None and fence > now)


@dataclass(frozen=True, slots=True)
class Binding:
    """A user bound to a pod."""

    uid: str
    pod: int
    bound_at: float
    last_seen: float | None = None


class FailoverType(StrEnum):
    POD_FAILURE = "POD_FAILURE"
    POD_RECOVERY = "POD_RECOVERY"
    USER_MIGRATED = "USER_MIGRATED"
    POD_DRAINED = "POD_DRAINED"


SAMPLE_SIZE = 10


class FailoverEvent(BaseModel):
    """One entry of a service's failover history."""

    model_config = ConfigDict(extra="forbid")

    at: float
    type: FailoverType
    namespace: str
    service: str
    pod: int
    reason: str = ""
    affected_users: int = 0
    sample: list[str] = Field(default_factory=list, max_length=SAMPLE_SIZE)
    to_pods: dict[int, int] = Field(default_factory=dict)  # target pod -> users moved there


class RouteRequest(BaseModel):
    """The seed's RouteRequest: which pod should serve this user?"""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    namespace: Namespace
    service_name: ServiceName = Field(alias="service")
    uid: Uid
    strategy: Strategy | None = None  # None: the service's own strategy


class PodStatus(BaseModel):
    """The seed's PodHealthStatus, widened with what an operator needs to see."""

    pod_index: int
    address: str | None  # None while the pod's name does not resolve
    name: str | None  # the DNS name the address comes from, if the pod was given one
    state: PodState
    is_healthy: bool
    weight: int
    last_change: float
    reason: str
    response_time_ms: float
    error_count: int
    load_state: int
    active_requests: int
    active_connections: int
    requests_total: int | None  # a counter; None: nothing reports it for this pod
    bound_users: int
    epoch: int  # raised each time users move here (sent in failover.epoch_header, if set)

    @classmethod
    def of(cls, pod: Pod, bound_users: int) -> PodStatus:
        return cls(
            pod_index=pod.index,
            address=pod.address,
            name=pod.name,
            state=pod.state,
            is_healthy=pod.accepts_new_users,
            weight=pod.weight,
            last_change=pod.health.since,
            reason=pod.health.reason,
            response_time_ms=pod.load.response_time_ms,
            error_count=pod.health.failures,
            load_state=pod.load.load_state,
            active_requests=pod.load.active_requests,
            active_connections=pod.load.active_connections,
            requests_total=pod.load.requests_total,
            bound_users=bound_users,
            epoch=pod.epoch,
        )


class RouteResult(BaseModel):
    pod_index: int
    address: str | None  # a pod that takes or keeps users has one
    strategy: Strategy
    load_state: int
    new_binding: bool
    health_status: PodState
    # Answered without Redis: from Envoy's routes or by hashing; a new user's bind is pending.
    degraded: bool = False


class HealthReport(BaseModel):
    """Input of update_pod_health: one observation of a pod's health."""

    model_config = ConfigDict(extra="forbid")

    is_healthy: bool
    response_time_ms: float | None = Field(default=None, ge=0)
    reason: str = Field(default="", max_length=512)
    # Unhealthy because the pod answered nothing in time (hung), not because it refused or
    # failed: it keeps its users for the service's failover.hang_grace_s.
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class UsersPage:
    """One page of the users bound to a pod (the reverse index)."""

    pod: int
    bound_users: int  # on the pod in all, when the page was read
    users: tuple[str, ...]
    next_cursor: int | None  # where the next page starts; None: this was the last page


@dataclass(frozen=True, slots=True)
class ServiceState:
    """Everything xDS needs to know about one service at one moment."""

    service: Service
    pods: tuple[Pod, ...]


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: object) -> M:
    """Validate ``data`` as ``model``; a violation is an InvalidInput naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(part) for part in error["loc"]), "problem": error["msg"]}
            for error in exc.errors(include_url=False, include_input=False)
        ]
        first = problems[0]
        raise InvalidInput(
            f"{first['field'] or model.__name__}: {first['problem']}", problems=problems
        ) from None
