"""Bodies only the admin API has; the domain's models (ServiceSettings, RouteRequest, PodStatus,
FailoverEvent, ...) are used as they are."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controlplane.domain import Binding, FailoverEvent, Pod, PodStatus, UsersPage
from controlplane.domain.models import HostName, PodIndex
from controlplane.domain.names import ORDINAL_NAME_PATTERN, ordinal_of
from controlplane.errors import InvalidInput

Reason = Annotated[str, Field(min_length=1, max_length=512)]
# The domain sets no upper bound; this one keeps an index exact in Redis' Lua (doubles) and in
# Envoy's 32-bit fields, and is what a path parameter may hold too.
MAX_POD_INDEX = 2**31 - 1
AdminPodIndex = Annotated[PodIndex, Field(le=MAX_POD_INDEX)]


def _optional_not_null(schema: dict[str, Any]) -> None:
    # Left out is left out: index, host and name may be absent but never null.
    properties = schema["properties"]
    for field in ("index", "host", "name"):
        (given,) = [s for s in properties[field].pop("anyOf") if s.get("type") != "null"]
        properties[field].pop("default", None)
        properties[field].update(given)
    # A host or a name, as the validator says.
    schema["oneOf"] = [{"required": ["host"]}, {"required": ["name"]}]


class PodPlace(BaseModel):
    """Where a pod is: an address (``host``) or a stable DNS name (``name``, resolved by the
    control plane), a port, and its weight. Its health and load are the control plane's."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_optional_not_null)

    index: AdminPodIndex | None = None
    # The pod's own field rules, so the two cannot drift apart.
    host: Annotated[str | None, Pod.model_fields["host"]] = None
    name: HostName | None = None
    port: Annotated[int, Pod.model_fields["port"]]
    weight: Annotated[int, Pod.model_fields["weight"]] = 1

    @field_validator("index", "host", "name", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("leave the field out rather than null")
        return value

    @model_validator(mode="after")
    def _one_way_to_reach_it(self) -> PodPlace:
        if (self.host is None) == (self.name is None):
            raise ValueError("give the pod either a host (an address) or a name (a DNS name)")
        return self

    @property
    def known_index(self) -> int | None:
        """The index given, else the name's ordinal, else None."""
        if self.index is not None:
            return self.index
        return None if self.name is None else ordinal_of(self.name)

    def to_pod(self, index: int | None = None) -> Pod:
        """The pod, at ``index`` if given, else at its ``known_index``."""
        at = self.known_index if index is None else index
        if at is None:
            raise InvalidInput("the pod has no index", field="index")
        return Pod(index=at, host=self.host, name=self.name, port=self.port, weight=self.weight)


def _pod_spec_schema(schema: dict[str, Any]) -> None:
    _optional_not_null(schema)
    # An index, or a name whose first label ends in -<index>.
    schema["anyOf"] = [
        {"required": ["index"]},
        {"required": ["name"], "properties": {"name": {"pattern": ORDINAL_NAME_PATTERN}}},
    ]


class PodSpec(PodPlace):
    """A pod to register or update. Its index is ``index``, or else the ordinal that ends its
    name's first label ("echo-2.echo" -> 2)."""

    model_config = ConfigDict(json_schema_extra=_pod_spec_schema)

    @model_validator(mode="after")
    def _an_index(self) -> PodSpec:
        if self.known_index is None:
            raise ValueError(
                "give the pod an index, or a name ending its first label in -<index> "
                "(a StatefulSet's pod-<i>.<service>)"
            )
        return self

    @property
    def pod_index(self) -> int:
        index = self.known_index
        assert index is not None  # checked on validation
        return index


MAX_LEASE_TTL_S = 3600.0


class LeaseRequest(PodPlace):
    """A pod registering itself, or renewing its lease. Its index is ``index``, else its name's
    ordinal, else the index of the pod already registered at this host (or name) and port,
    else the lowest free one: renew with the ``pod_index`` the answer gives."""

    # The lease ends this long after the request unless renewed (renew every third of it).
    ttl_s: float = Field(default=30.0, ge=1.0, le=MAX_LEASE_TTL_S)


class Lease(BaseModel):
    """A pod's lease, as registered or renewed."""

    pod_index: int
    ttl_s: float
    expires_at: float  # unix seconds
    pod: PodStatus


class PodAction(BaseModel):
    """Optional body of drain and fail: why (kept in the pod's health and the history)."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason = "operator"


class DrainAction(PodAction):
    """Optional body of drain."""

    # Move the pod's users to other pods at this rate (users per second) instead of letting
    # them stay until idle.
    move_users_per_s: float | None = Field(default=None, gt=0, le=100_000)


class RecoverAction(PodAction):
    """Optional body of recover."""

    # Also move the pod its fair share of users now (else it fills with new users only).
    rebalance: bool = False


class Migration(BaseModel):
    """Body of PUT .../users/{uid}: the pod the user should be on."""

    model_config = ConfigDict(extra="forbid")

    pod: AdminPodIndex
    reason: Reason = "operator"


class BindingView(BaseModel):
    """A user's binding to a pod."""

    uid: str
    pod: int
    bound_at: float
    last_seen: float | None = None

    @classmethod
    def of(cls, binding: Binding) -> BindingView:
        return cls(
            uid=binding.uid, pod=binding.pod, bound_at=binding.bound_at, last_seen=binding.last_seen
        )


class PodUsers(BaseModel):
    """One page of the users bound to a pod."""

    pod: int
    bound_users: int  # on the pod in all, when the page was read
    users: list[str]
    # Pass as ``cursor`` for the next page; null: this was the last page.
    next_cursor: int | None

    @classmethod
    def of(cls, page: UsersPage) -> PodUsers:
        return cls(
            pod=page.pod,
            bound_users=page.bound_users,
            users=list(page.users),
            next_cursor=page.next_cursor,
        )


class PodChange(BaseModel):
    """A pod after an operator's action, and the failover that action caused (if any)."""

    pod: PodStatus
    failover: FailoverEvent | None = None


class PodRemoval(BaseModel):
    """A removed pod's index, and the failover that moved its users (if it had any)."""

    pod_index: int
    failover: FailoverEvent | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    redis: bool
    # This replica holds the leader lease (runs health checks and moves users off failed pods).
    leader: bool
