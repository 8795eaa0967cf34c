"""The Redis key layout (documented in docs/redis-keys.md).

Every key of one service carries the hash tag ``{namespace/name}``, so all of a service's keys
live in one Redis Cluster slot and its scripts and transactions stay single-slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.domain import ServiceKey


@dataclass(frozen=True, slots=True)
class ServiceKeys:
    """Names of the Redis keys of one service."""

    service: str  # STRING: the Service as JSON
    pods: str  # HASH: pod index -> Pod (without load) as JSON
    loads: str  # HASH: pod index -> LoadReport as JSON
    envoy_loads: str  # HASH: replica id -> EnvoyLoadShare as JSON
    bindings: str  # HASH: uid -> "<pod>|<bound_at>"
    last_seen: str  # ZSET: uid scored by last use (unix seconds)
    pod_users_prefix: str  # SET per pod: <prefix><index> -> uids bound there
    new_user_tokens: str  # HASH tokens, at: the new-user token bucket (absent while full)
    events: str  # LIST: FailoverEvent JSON, newest first, capped
    leases: str  # ZSET: pod index scored by when its lease ends (unix seconds)
    epoch: str  # STRING: counter, the last epoch given to a pod users moved to

    def pod_users(self, index: int) -> str:
        return f"{self.pod_users_prefix}{index}"


class KeySpace:
    """Builds key names under one configurable prefix."""

    def __init__(self, prefix: str = "sr") -> None:
        self.prefix = prefix
        self.services = f"{prefix}:services"  # SET of "namespace/name"
        # The leader lease and its epoch share one hash tag: the lease script needs both in one
        # cluster slot.
        self.leader_lease = f"{prefix}:{{leader}}:lease"  # STRING: "<replica>|<token>", with TTL
        self.leader_epoch = f"{prefix}:{{leader}}:epoch"  # STRING: counter, the fencing token
        self.replicas_channel = f"{prefix}:replicas"  # pub/sub channel, not a key: announcements

    def of(self, key: ServiceKey) -> ServiceKeys:
        base = f"{self.prefix}:{{{key.namespace}/{key.name}}}"
        return ServiceKeys(
            service=f"{base}:svc",
            pods=f"{base}:pods",
            loads=f"{base}:load",
            envoy_loads=f"{base}:envoy-load",
            bindings=f"{base}:b",
            last_seen=f"{base}:seen",
            pod_users_prefix=f"{base}:p:",
            new_user_tokens=f"{base}:admit",
            events=f"{base}:events",
            leases=f"{base}:leases",
            epoch=f"{base}:epoch",
        )
