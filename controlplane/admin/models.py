"""Bodies only the admin API has; the domain's models (ServiceSettings, RouteRequest, PodStatus,
FailoverEvent, ...) are used as they are."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from controlplane.domain import Binding, FailoverEvent, Pod, PodStatus, UsersPage
from controlplane.domain.models import PodIndex

Reason = Annotated[str, Field(min_length=1, max_length=512)]
# The domain sets no upper bound; this one keeps an index exact in Redis' Lua (doubles) and in
# Envoy's 32-bit fields, and is what a path parameter may hold too.
MAX_POD_INDEX = 2**31 - 1
AdminPodIndex = Annotated[PodIndex, Field(le=MAX_POD_INDEX)]


class PodSpec(BaseModel):
    """A pod to register or update. Its health and load are the control plane's, not yours."""

    model_config = ConfigDict(extra="forbid")

    # The pod's own field rules, so the two cannot drift apart.
    index: AdminPodIndex
    host: Annotated[str, Pod.model_fields["host"]]
    port: Annotated[int, Pod.model_fields["port"]]
    weight: Annotated[int, Pod.model_fields["weight"]] = 1

    def to_pod(self) -> Pod:
        return Pod(index=self.index, host=self.host, port=self.port, weight=self.weight)


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
