"""Failover planning: where the users of a pod that must be emptied go (pure).

Failover places many users at once, so it ignores the service's own strategy: load-driven
strategies see the same stale load for every user and would pile them all onto one pod.
Bounded-load hashing spreads them by weight, never over ``balance_factor`` times a fair share,
and two replicas planning the same failover agree user by user.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from controlplane.balancer import BoundedLoadHash, Candidate, eligible


def plan_moves(
    uids: Iterable[str], candidates: Sequence[Candidate], balance_factor: float
) -> dict[int, list[str]]:
    """Target pod -> users to move there. Raises NoHealthyPods when no candidate is eligible."""
    placer = BoundedLoadHash(balance_factor)
    pool = eligible(candidates)
    position = {c.index: i for i, c in enumerate(pool)}
    plan: dict[int, list[str]] = {}
    for uid in uids:
        target = placer.pick(pool, uid)
        slot = position[target]
        pool[slot] = dataclasses.replace(pool[slot], bound_users=pool[slot].bound_users + 1)
        plan.setdefault(target, []).append(uid)
    return plan


def rebalance_quota(candidates: Sequence[Candidate], target: int) -> dict[int, int]:
    """How many users to take from each other eligible pod so ``target`` gets its fair share."""
    pool = [c for c in candidates if c.eligible or c.index == target]
    total_users = sum(c.bound_users for c in pool)
    total_weight = sum(c.weight for c in pool)
    fair = {c.index: total_users * c.weight // total_weight for c in pool}
    wanted = fair.get(target, 0) - next(c.bound_users for c in pool if c.index == target)
    quota: dict[int, int] = {}
    for c in sorted(pool, key=lambda c: c.bound_users - fair[c.index], reverse=True):
        if wanted <= 0 or c.index == target:
            continue
        take = min(wanted, max(0, c.bound_users - fair[c.index]))
        if take:
            quota[c.index] = take
            wanted -= take
    return quota
