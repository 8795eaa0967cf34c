"""Where the xDS server gets the state it serves: the route manager implements this."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from controlplane.domain import ServiceKey, ServiceState
from controlplane.domain.sticky import StickyTable


class StateSource(Protocol):
    # The users Envoy carries, and which pod each is routed to (one scope per user).
    sticky: StickyTable

    async def service_states(self) -> list[ServiceState]:
        """Every service, for a full build."""
        ...

    async def service_state(self, key: ServiceKey) -> ServiceState | None:
        """One service's current state; None once it is removed."""
        ...

    def subscribe(self, callback: Callable[[ServiceKey], None]) -> None:
        """Call ``callback`` (in the event loop, not awaited) on every change of a service
        (its settings or pods; users are told through ``sticky``)."""
        ...
