"""The balancer protocol: every strategy picks one eligible pod for a new user."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from controlplane.domain import (
    ACCEPTS_NEW_USERS,
    PREFERRED_FOR_NEW_USERS,
    Pod,
    PodState,
    Strategy,
)
from controlplane.errors import NoHealthyPods


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a strategy may know about a pod when placing a user."""

    index: int
    weight: int = 1
    state: PodState = PodState.HEALTHY
    active_requests: int = 0
    active_connections: int = 0
    response_time_ms: float = 0.0  # EWMA
    load_state: int = 0  # 0-100
    bound_users: int = 0

    @classmethod
    def of(cls, pod: Pod, bound_users: int = 0) -> Candidate:
        return cls(
            index=pod.index,
            weight=pod.weight,
            # No address, no users: a pod whose name does not resolve is down for placement.
            state=pod.state if pod.host is not None else PodState.DOWN,
            active_requests=pod.load.active_requests,
            active_connections=pod.load.active_connections,
            response_time_ms=pod.load.response_time_ms,
            load_state=pod.load.load_state,
            bound_users=bound_users,
        )

    @property
    def eligible(self) -> bool:
        """May take new users (a SUSPECT pod only if no candidate is ``preferred``)."""
        return self.state in ACCEPTS_NEW_USERS

    @property
    def preferred(self) -> bool:
        return self.state in PREFERRED_FOR_NEW_USERS


class Balancer(Protocol):
    """Picks the pod for a new user. Instances may keep state (a rotation) between picks."""

    strategy: Strategy

    def pick(self, candidates: Sequence[Candidate], uid: str) -> int:
        """Return the index of an eligible candidate; raise NoHealthyPods if there is none."""
        ...


def eligible(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates that may take new users, ordered by index; NoHealthyPods if none.

    The HEALTHY ones while there are any: a SUSPECT pod (failing checks) takes new users only
    when no other can.
    """
    preferred = [c for c in candidates if c.preferred]
    chosen = sorted(preferred or (c for c in candidates if c.eligible), key=lambda c: c.index)
    if not chosen:
        raise NoHealthyPods("no pod of the service accepts new users")
    return chosen
