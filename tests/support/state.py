"""An in-memory StateSource: the smallest thing the xDS server can follow."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from controlplane.domain import Pod, Service, ServiceKey, ServiceState
from controlplane.domain.sticky import StickyTable


class MemoryStateSource:
    def __init__(self, states: list[ServiceState] | None = None) -> None:
        self.states = {s.service.key: s for s in states or []}
        self._subscribers: list[Callable[[ServiceKey], None]] = []
        self.sticky = StickyTable(window_s=24 * 3600)

    def route(self, key: ServiceKey, users: Mapping[str, int]) -> None:
        """Put users (uid -> pod) into Envoy's routes, as the miss path does."""
        now = time.monotonic()
        for uid, pod in users.items():
            self.sticky.put(key, uid, pod, now)

    async def service_states(self) -> list[ServiceState]:
        return list(self.states.values())

    async def service_state(self, key: ServiceKey) -> ServiceState | None:
        return self.states.get(key)

    def subscribe(self, callback: Callable[[ServiceKey], None]) -> None:
        self._subscribers.append(callback)

    def put(self, state: ServiceState) -> None:
        self.states[state.service.key] = state
        self._notify(state.service.key)

    def remove(self, key: ServiceKey) -> None:
        del self.states[key]
        self._notify(key)

    def update_pod(self, key: ServiceKey, index: int, **changes: object) -> None:
        """Replace pod ``index`` of a service with a copy carrying ``changes``."""
        state = self.states[key]
        pods = tuple(p.model_copy(update=changes) if p.index == index else p for p in state.pods)
        self.put(ServiceState(state.service, pods))

    def _notify(self, key: ServiceKey) -> None:
        for callback in self._subscribers:
            callback(key)


def service_state(namespace: str, name: str, ports: list[int], **settings: object) -> ServiceState:
    """A service whose pod i listens on 127.0.0.1:ports[i]."""
    service = Service.model_validate({"namespace": namespace, "name": name, "settings": settings})
    pods = tuple(Pod(index=i, host="127.0.0.1", port=port) for i, port in enumerate(ports))
    return ServiceState(service, pods)
