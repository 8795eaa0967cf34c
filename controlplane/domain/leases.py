"""What a pod's lease means for its health (pure).

A pod that registers itself (``POST .../leases``) holds a lease of ``ttl_s`` seconds and
renews it before it ends. The policy, applied by the leader:
- A lease that ended is a pod that may be gone: it is *drained* at once (no new users; bound
  users stay, in case only its renewals are lost), then, once the lease has been over for
  ``drain_s``, *failed* (its users move). A pod already failed is left as it is.
- A renewal after that is the pod saying it is alive: a drain the lapse made is undone
  (``recover``), a failure the lapse made counts as one passed check (the pod recovers as
  any failed pod does, after ``healthy_threshold`` passes: renewals or health checks).
  Health its operator or its checks gave it is not touched.
"""

from __future__ import annotations

from controlplane.domain.health import FAILED, HealthSignal, PodHealth, PodState

LAPSED = "lease lapsed"
RENEWED = "lease renewed"


def lapsed_reason(lapsed_for_s: float) -> str:
    return f"{LAPSED} {lapsed_for_s:.1f} s ago"


def after_lapse(health: PodHealth, lapsed_for_s: float, drain_s: float) -> HealthSignal | None:
    """The signal a pod needs ``lapsed_for_s`` after its lease ended; None: nothing to do."""
    if health.state in FAILED:
        return None
    if lapsed_for_s >= drain_s:
        return HealthSignal.FAIL
    return None if health.state is PodState.DRAINING else HealthSignal.DRAIN


def after_renewal(health: PodHealth) -> HealthSignal | None:
    """The signal a renewal sends a pod its lapse (or earlier renewals) left unhealthy."""
    made_by_lease = health.reason.startswith((LAPSED, RENEWED))
    if not made_by_lease:
        return None
    if health.state is PodState.DRAINING:
        return HealthSignal.RECOVER
    if health.state in FAILED or health.state is PodState.RECOVERING:
        return HealthSignal.CHECK_PASSED
    return None
