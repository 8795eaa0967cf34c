"""Failover: where the users of a pod that must be emptied go (``plan``, pure), and the thin
executor that moves them in Redis and records what happened (``executor``)."""

from controlplane.failover.plan import plan_moves, rebalance_quota

__all__ = ["plan_moves", "rebalance_quota"]
