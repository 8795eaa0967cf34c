"""The sticky routes Envoy carries: which users it routes itself, and to which pod (pure).

Envoy holds a route per *recently seen* user, not per binding: a user enters the table when
the control plane places or sees it (the miss path, a migration) and leaves it ``window_s``
later. A user still active then comes back through the miss path once, gets the same pod from
its binding, and re-enters. Bindings themselves stay in Redis until their own idle TTL.

Every change of a user's entry is told to the table's observer (the xDS cache re-points that
user's scope), one user at a time, so no consumer ever compares whole tables.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping

from controlplane.domain.names import ServiceKey


class StickyTable:
    """uid -> pod per service, each entry with the time it was last refreshed."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        # Told (service, uid) after each change of that user's entry (added, moved, removed).
        self.observer: Callable[[ServiceKey, str], None] = lambda key, uid: None
        self._routes: dict[ServiceKey, dict[str, int]] = {}
        self._seen: dict[tuple[ServiceKey, str], float] = {}
        # One (seen, key, uid) per user; a user refreshed since is pushed back when popped.
        self._expiry: list[tuple[float, ServiceKey, str]] = []

    def routes(self, key: ServiceKey) -> Mapping[str, int]:
        return self._routes.get(key, {})

    def __len__(self) -> int:
        return len(self._seen)

    def put(self, key: ServiceKey, uid: str, pod: int, seen: float) -> bool:
        """Add or refresh a user; True when Envoy's routes change (new user or other pod)."""
        routes = self._routes.setdefault(key, {})
        changed = routes.get(uid) != pod
        if (key, uid) not in self._seen:
            heapq.heappush(self._expiry, (seen, key, uid))
        routes[uid] = pod
        self._seen[key, uid] = seen
        if changed:
            self.observer(key, uid)
        return changed

    def move(self, key: ServiceKey, uids: Iterable[str], pod: int) -> bool:
        """Point users already in the table at ``pod``; users not in it stay out."""
        routes = self._routes.get(key)
        if not routes:
            return False
        changed = False
        for uid in uids:
            if uid in routes and routes[uid] != pod:
                routes[uid] = pod
                changed = True
                self.observer(key, uid)
        return changed

    def remove(self, key: ServiceKey, uid: str) -> bool:
        routes = self._routes.get(key)
        if routes is None or routes.pop(uid, None) is None:
            return False
        del self._seen[key, uid]
        self.observer(key, uid)
        return True

    def drop_service(self, key: ServiceKey) -> bool:
        routes = self._routes.pop(key, None)
        for uid in routes or ():
            del self._seen[key, uid]
            self.observer(key, uid)
        return bool(routes)

    def expire(self, now: float) -> set[ServiceKey]:
        """Remove users not refreshed within the window; returns the services that changed."""
        cutoff = now - self.window_s
        changed: set[ServiceKey] = set()
        while self._expiry and self._expiry[0][0] <= cutoff:
            _, key, uid = heapq.heappop(self._expiry)
            seen = self._seen.get((key, uid))
            if seen is None:
                continue  # removed meanwhile
            if seen > cutoff:
                heapq.heappush(self._expiry, (seen, key, uid))
            elif self.remove(key, uid):
                changed.add(key)
        return changed
