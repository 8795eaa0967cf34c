"""What the route manager tells the rest of the process, as go-control-plane's ``Callbacks``.

``server.py`` builds one ``ManagerCallbacks`` and passes it to the manager's constructor; no
part registers itself on another. Callbacks run in the event loop and are not awaited: they
queue work (a replica announcement, a metric) and return.

The xDS server is the one follower that subscribes (``StatefulRouteManager.subscribe``, its
``StateSource`` contract): it is built on the manager, and starts following it at the moment
it makes its first full build, so that no change falls between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from controlplane.domain import FailoverEvent, ServiceKey

# Users that moved (uid -> pod) or were unbound (uid -> None).
Moves = dict[str, int | None]


class ManagerCallbacks(Protocol):
    def on_service_changed(self, key: ServiceKey) -> None:
        """This replica changed a service's settings or pods: the other replicas must reload."""
        ...

    def on_users_moved(self, key: ServiceKey, moves: Moves) -> None:
        """This replica moved or unbound users: the other replicas' routes must follow."""
        ...

    def on_event_recorded(self, event: FailoverEvent) -> None:
        """A failover event was written to the history."""
        ...


@dataclass(frozen=True, slots=True)
class CallbackFuncs:
    """``ManagerCallbacks`` from plain functions; a missing one is skipped."""

    service_changed: Callable[[ServiceKey], None] | None = None
    users_moved: Callable[[ServiceKey, Moves], None] | None = None
    event_recorded: Callable[[FailoverEvent], None] | None = None

    def on_service_changed(self, key: ServiceKey) -> None:
        if self.service_changed is not None:
            self.service_changed(key)

    def on_users_moved(self, key: ServiceKey, moves: Moves) -> None:
        if self.users_moved is not None:
            self.users_moved(key, moves)

    def on_event_recorded(self, event: FailoverEvent) -> None:
        if self.event_recorded is not None:
            self.event_recorded(event)
