"""The pod health lifecycle: every state and every transition lives here.

Rules:
- HEALTHY takes new users. A failed check makes it SUSPECT: it keeps its users but takes new
  ones only when no HEALTHY pod can (its checks are failing: it may be dead, yet a doubtful
  pod beats refusing the user); a passed check makes it HEALTHY again.
- ``unhealthy_threshold`` consecutive failed checks, an Envoy outlier ejection, the fleet's
  requests failing (Envoys' load reports, ``fleet_evidence.py``) or an operator's ``fail`` make
  a pod *failed*: DOWN (checks, requests or operator) or EJECTED (Envoy's outlier detection).
  Entering a failed state from a serving one is a *failure*: its users are moved elsewhere.
- A pod that is gone refuses or resets connections; a pod that is *hung* answers nothing in
  time (a check timed out, or Envoy reports it failing and it does not answer a request).
  A hung pod keeps its users for ``hang_grace_s`` from its first timeout (a pause is not a
  death: its requests wait, and a pod that answers again is HEALTHY with nobody moved); only
  then does it fail, and its failure is *fenced*: its users move ``fence_s`` later, when every
  request that may still be in flight to it has ended (``fenced_until``). A refusal while hung
  is a death like any other.
- A failed pod that passes a check becomes RECOVERING; ``healthy_threshold`` consecutive passes
  (more for a pod that flaps, see ``recovery_passes``) make it HEALTHY again (a *recovery*).
  A failed check while RECOVERING sends it back to DOWN without a second failure.
- An operator's ``drain`` makes any pod DRAINING: no new users, bound users keep it (or, with
  a ``drain_rate``, the leader moves them away at that rate). Leaving DRAINING forgets the rate.
  Checks never un-drain it, but failing checks or an ejection take it to DOWN/EJECTED (a failure:
  its remaining users must move). Only an operator's ``recover`` ends a drain.
- An operator's ``recover`` makes any pod HEALTHY at once.
- Envoy un-ejecting a pod counts as one passed check (Envoy may un-eject a pod that answers
  its health check while failing real requests, so it never skips RECOVERING).
- A pod Envoy ejected is not HEALTHY again before Envoy un-ejects it (or the longest
  ejection Envoy allows has passed, should the word be lost), however many checks it passes:
  until then Envoy balances no request to it, and would not report its next death (an ejected
  pod is not ejected again).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from controlplane.domain.envoy_settings import ENVOY_MAX_EJECTION_S


class PodState(StrEnum):
    HEALTHY = "healthy"
    SUSPECT = "suspect"
    EJECTED = "ejected"
    DRAINING = "draining"
    DOWN = "down"
    RECOVERING = "recovering"


class HealthSignal(StrEnum):
    CHECK_PASSED = "check_passed"
    CHECK_FAILED = "check_failed"
    CHECK_TIMED_OUT = "check_timed_out"
    EJECTED = "ejected"
    REQUESTS_FAILING = "requests_failing"
    EJECTED_HUNG = "ejected_hung"  # Envoy ejected it, and it answers nothing (hung)
    REQUESTS_FAILING_HUNG = "requests_failing_hung"  # the fleet's requests fail there, as above
    UNEJECTED = "unejected"
    DRAIN = "drain"
    FAIL = "fail"
    RECOVER = "recover"


# New users go only to these states, and to SUSPECT ones only while no pod is HEALTHY.
ACCEPTS_NEW_USERS = frozenset({PodState.HEALTHY, PodState.SUSPECT})
PREFERRED_FOR_NEW_USERS = frozenset({PodState.HEALTHY})
# Users already bound stay on a pod in these states.
KEEPS_BOUND_USERS = frozenset({PodState.HEALTHY, PodState.SUSPECT, PodState.DRAINING})
FAILED = frozenset({PodState.EJECTED, PodState.DOWN})

# A pod that failed this many times inside FLAP_WINDOW_S needs proportionally more passes.
FLAP_WINDOW_S = 300.0
MAX_RECOVERY_FACTOR = 4


class PodHealth(BaseModel):
    """A pod's place in the lifecycle, persisted with the pod."""

    model_config = ConfigDict(frozen=True)

    state: PodState = PodState.HEALTHY
    since: float = 0.0
    passes: int = Field(default=0, ge=0)
    failures: int = Field(default=0, ge=0)
    # Times of recent failures, oldest first, for flap damping.
    recent_failures: tuple[float, ...] = ()
    reason: str = ""
    # When Envoy's outlier detection last ejected the pod, until it un-ejects it.
    ejected_at: float | None = None
    # When the pod last became HEALTHY again after a failure or a drain (None: never).
    recovered_at: float | None = None
    # While DRAINING: users per second the leader moves away (None: they stay until idle).
    drain_rate: float | None = Field(default=None, gt=0)
    # While a serving pod does not answer (hung): when it first timed out.
    hung_since: float | None = None
    # A hung pod's failure: its users move no sooner than this (requests to it have ended).
    fenced_until: float | None = None


@dataclass(frozen=True, slots=True)
class Thresholds:
    healthy: int = 2
    unhealthy: int = 3
    # Envoy un-ejects a pod within this long (its max_ejection_time).
    max_ejection_s: float = ENVOY_MAX_EJECTION_S
    # How long a hung pod keeps its users, from its first timeout.
    hang_grace_s: float = 0.0
    # After a hung pod fails, how long requests already sent to it may still be answered.
    fence_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of one signal: the new health and what the caller must do about it."""

    before: PodState
    health: PodHealth
    failed: bool = False  # the pod just failed: move its users
    recovered: bool = False  # the pod is serving again

    @property
    def changed(self) -> bool:
        return self.before is not self.health.state


def recovery_passes(health: PodHealth, thresholds: Thresholds, now: float) -> int:
    """Passes a failed pod needs before it is HEALTHY again; flapping pods need more."""
    recent = sum(1 for t in health.recent_failures if now - t <= FLAP_WINDOW_S)
    return thresholds.healthy * min(max(recent, 1), MAX_RECOVERY_FACTOR)


def apply_signal(
    health: PodHealth,
    signal: HealthSignal,
    now: float,
    thresholds: Thresholds = Thresholds(),
    reason: str = "",
) -> Transition:
    """Apply one health signal to a pod and return its new health (pure)."""
    state = health.state
    if signal is HealthSignal.RECOVER:  # the operator knows better than Envoy's ejection too
        health = health.model_copy(update={"ejected_at": None})
        return _to(health, PodState.HEALTHY, now, reason, recovered=state is not PodState.HEALTHY)
    if signal is HealthSignal.DRAIN:
        if state is PodState.DRAINING:
            return Transition(state, health)
        return _to(health, PodState.DRAINING, now, reason)
    if signal in (HealthSignal.FAIL, HealthSignal.REQUESTS_FAILING):
        return _fail(health, PodState.DOWN, now, reason)
    if signal is HealthSignal.EJECTED:
        health = health.model_copy(update={"ejected_at": now})
        return _fail(health, PodState.EJECTED, now, reason)
    if signal is HealthSignal.EJECTED_HUNG:
        health = health.model_copy(update={"ejected_at": now})
        return _hung(health, PodState.EJECTED, now, thresholds, reason, verdict=True)
    if signal is HealthSignal.REQUESTS_FAILING_HUNG:
        return _hung(health, PodState.DOWN, now, thresholds, reason, verdict=True)
    if signal is HealthSignal.CHECK_TIMED_OUT:
        return _hung(health, PodState.DOWN, now, thresholds, reason, verdict=False)
    if signal is HealthSignal.UNEJECTED:
        health = health.model_copy(update={"ejected_at": None})
        return _passed(health, now, thresholds, reason)
    if signal is HealthSignal.CHECK_PASSED:
        return _passed(health, now, thresholds, reason)
    return _check_failed(health, now, thresholds, reason)


def _passed(health: PodHealth, now: float, thresholds: Thresholds, reason: str) -> Transition:
    state = health.state
    if state in (PodState.HEALTHY, PodState.SUSPECT):
        return _to(health, PodState.HEALTHY, now, reason, passes=health.passes + 1)
    if state is PodState.DRAINING:
        return Transition(
            state,
            health.model_copy(
                update={"passes": health.passes + 1, "failures": 0, "hung_since": None}
            ),
        )
    passes = health.passes + 1 if state is PodState.RECOVERING else 1
    ejected = health.ejected_at is not None and now - health.ejected_at < thresholds.max_ejection_s
    if passes >= recovery_passes(health, thresholds, now) and not ejected:
        return _to(health, PodState.HEALTHY, now, reason, passes=passes, recovered=True)
    return _to(health, PodState.RECOVERING, now, reason, passes=passes)


def _hung(
    health: PodHealth,
    target: PodState,
    now: float,
    thresholds: Thresholds,
    reason: str,
    *,
    verdict: bool,
) -> Transition:
    """A serving pod that answers nothing: it fails, fenced, once it has been hung for the
    grace and (unless ``verdict``: Envoy counted the failures already) failed ``unhealthy``
    checks."""
    if health.state not in KEEPS_BOUND_USERS:
        # Nobody's requests wait on it: a timeout is a failed check like any other.
        return _check_failed(health, now, thresholds, reason)
    since = now if health.hung_since is None else health.hung_since
    failures = health.failures + 1
    enough = verdict or failures >= thresholds.unhealthy
    if enough and now - since >= thresholds.hang_grace_s:
        return _fail(health, target, now, reason, fenced_until=now + thresholds.fence_s)
    state = PodState.DRAINING if health.state is PodState.DRAINING else PodState.SUSPECT
    transition = _to(health, state, now, reason, failures=failures)
    return replace(transition, health=transition.health.model_copy(update={"hung_since": since}))


def _check_failed(health: PodHealth, now: float, thresholds: Thresholds, reason: str) -> Transition:
    state = health.state
    failures = health.failures + 1
    if state in FAILED:
        return Transition(state, health.model_copy(update={"failures": failures, "passes": 0}))
    if state is PodState.RECOVERING:
        return _fail(health, PodState.DOWN, now, reason)
    if failures >= thresholds.unhealthy:
        return _fail(health, PodState.DOWN, now, reason)
    if state is PodState.DRAINING:
        return Transition(state, health.model_copy(update={"failures": failures, "passes": 0}))
    return _to(health, PodState.SUSPECT, now, reason, failures=failures)


def _fail(
    health: PodHealth,
    target: PodState,
    now: float,
    reason: str,
    *,
    fenced_until: float | None = None,
) -> Transition:
    if health.state in FAILED:
        # Already failed (its users were moved then): only the state's name may change.
        return _to(health, target, now, reason, failures=health.failures + 1)
    recent = (*(t for t in health.recent_failures if now - t <= FLAP_WINDOW_S), now)
    new = PodHealth(
        state=target,
        since=now,
        failures=health.failures + 1,
        recent_failures=recent[-MAX_RECOVERY_FACTOR:],
        reason=reason,
        ejected_at=health.ejected_at,
        # A fence still running outlives a new failure: a hung pod that resumed and fails
        # again may still answer what waited on it.
        fenced_until=max(
            (f for f in (fenced_until, health.fenced_until) if f is not None), default=None
        ),
    )
    # A recovering pod took no users, so failing it again moves nobody; it still counts as a flap.
    return Transition(health.state, new, failed=health.state is not PodState.RECOVERING)


def _to(
    health: PodHealth,
    target: PodState,
    now: float,
    reason: str,
    *,
    passes: int = 0,
    failures: int = 0,
    recovered: bool = False,
) -> Transition:
    since = health.since if target is health.state else now
    new = health.model_copy(
        update={
            "state": target,
            "since": since,
            "passes": passes,
            "failures": failures,
            "reason": reason or health.reason if target is health.state else reason,
            "recovered_at": now if recovered else health.recovered_at,
            "drain_rate": health.drain_rate if target is health.state else None,
            "hung_since": None,  # a hung pod's callers set it again
        }
    )
    return Transition(health.state, new, recovered=recovered)
