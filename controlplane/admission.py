"""Whether a service binds a new user: the refusals of its limits, remembered and logged.

Redis decides (``BIND_MANY`` counts the service's bindings and takes a token from its bucket,
both shared by every replica). After a refusal this replica refuses the service's new users
itself for a while, without a round trip: until the next token is due (rate), or for a
second (full: an idle expiry or an unbind may make room). Refusals are logged once per
interval per service and reason, never per request: a flood must not flood the log too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from controlplane.domain import NewUserLimits, ServiceKey
from controlplane.errors import NewUsersLimited
from controlplane.store import Refusal

log = logging.getLogger("stateful_route.admission")

LOG_EVERY_S = 10.0
# The longest this replica refuses on its own before asking Redis again.
_RECHECK_S = 1.0


class NewUserGate:
    """Refusals of new users, per service: the local wait after one, counting and logging."""

    def __init__(self, clock: Callable[[], float], *, log_every_s: float = LOG_EVERY_S) -> None:
        self._clock = clock
        self._log_every_s = log_every_s
        self._closed: dict[ServiceKey, tuple[float, Refusal]] = {}
        self._unlogged: dict[tuple[ServiceKey, Refusal], int] = {}
        self._logged_at: dict[tuple[ServiceKey, Refusal], float] = {}

    def check(self, key: ServiceKey, limits: NewUserLimits) -> None:
        """Raise NewUsersLimited while a recent refusal still stands for the service."""
        closed = self._closed.get(key)
        if closed is None:
            return
        until, reason = closed
        if self._clock() < until:
            raise self._refusal(key, limits, reason)
        del self._closed[key]

    def refused(self, key: ServiceKey, limits: NewUserLimits, reason: Refusal) -> NewUsersLimited:
        """Redis (or the degraded mode) refused a new user: the error to raise."""
        wait = 1.0 / limits.new_per_s if reason is Refusal.RATE else _RECHECK_S
        self._closed[key] = (self._clock() + min(wait, _RECHECK_S), reason)
        return self._refusal(key, limits, reason)

    def _refusal(self, key: ServiceKey, limits: NewUserLimits, reason: Refusal) -> NewUsersLimited:
        self._note(key, limits, reason)
        limit = (
            f"{limits.max_bound_users} bound users"
            if reason is Refusal.FULL
            else f"{limits.new_per_s:g} new users per second"
        )
        return NewUsersLimited(
            f"{key} binds no new user now: at its limit of {limit}",
            namespace=key.namespace,
            service=key.name,
            reason=reason.value,
            over_limit=limits.over_limit.value,
        )

    def _note(self, key: ServiceKey, limits: NewUserLimits, reason: Refusal) -> None:
        which = (key, reason)
        refused = self._unlogged.get(which, 0) + 1
        now = self._clock()
        last = self._logged_at.get(which)
        if last is not None and now - last < self._log_every_s:
            self._unlogged[which] = refused
            return
        self._unlogged.pop(which, None)
        self._logged_at[which] = now
        log.warning(
            "new_users_refused service=%s reason=%s refused=%d since_s=%.1f over_limit=%s",
            key, reason.value, refused, 0.0 if last is None else now - last,
            limits.over_limit.value,
        )  # fmt: skip
