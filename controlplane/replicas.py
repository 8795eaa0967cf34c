"""Several control-plane replicas on one Redis: one leader, and every replica kept current.

- ``LeaderLease``: a Redis key held for ``ttl_s`` and renewed every third of it. Taking it
  bumps an epoch, the fencing token: a replica acts as leader only while the lease it renewed
  last still carries its own token, so a paused ex-leader stops before its successor starts
  (a lost renewal ends leadership at once). The leader runs the active health checks, idle
  expiry and the moves off failed pods; any replica may observe a failure.
- ``ReplicaSync``: a Redis channel on which each replica announces service changes and user
  moves, so that every replica's Envoys route a moved user to its new pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from controlplane.callbacks import Moves
from controlplane.domain import ServiceKey
from controlplane.store.connection import RedisClient
from controlplane.store.keys import KeySpace

log = logging.getLogger("stateful_route.replicas")

# KEYS: lease, epoch   ARGV: replica id, ttl ms
# -> the fencing token (epoch) if this replica holds the lease now, else nil.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder then
  local id, token = string.match(holder, '^(.*)|(%d+)$')
  if id ~= ARGV[1] then
    return nil
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(token)
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return token
"""

# KEYS: lease   ARGV: replica id, token
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] .. '|' .. ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def new_replica_id() -> str:
    return uuid.uuid4().hex[:12]


class LeaderLease:
    """Holds or waits for the leader lease; ``is_leader()`` is cheap and always current."""

    def __init__(
        self, redis: RedisClient, keys: KeySpace, replica_id: str, *, ttl_s: float = 3.0
    ) -> None:
        self.replica_id = replica_id
        self.ttl_s = ttl_s
        self._keys = [keys.leader_lease, keys.leader_epoch]
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self.token: int | None = None
        self._valid_until = 0.0

    def is_leader(self) -> bool:
        return self.token is not None and time.monotonic() < self._valid_until

    async def try_acquire(self) -> bool:
        """Take or renew the lease; True while this replica is the leader."""
        started = time.monotonic()
        try:
            token = await self._acquire(
                keys=self._keys, args=[self.replica_id, int(self.ttl_s * 1000)]
            )
        except RedisError as exc:
            log.warning("lease_renew_failed replica=%s error=%r", self.replica_id, exc)
            token = None
        was = self.token
        self.token = None if token is None else int(token)
        # Valid from when we asked, not when Redis answered: never longer than Redis holds it.
        self._valid_until = started + self.ttl_s if self.token is not None else 0.0
        if self.token != was:
            log.info(
                "leadership replica=%s leader=%s token=%s",
                self.replica_id,
                self.token is not None,
                self.token,
            )
        return self.token is not None

    async def run(self) -> None:
        while True:
            await self.try_acquire()
            await asyncio.sleep(self.ttl_s / 3)

    async def release(self) -> None:
        if self.token is not None:
            with contextlib.suppress(RedisError):
                await self._release(keys=self._keys[:1], args=[self.replica_id, self.token])
        self.token = None


# What a replica does with another's announcement: the manager's ``apply_remote``.
RemoteChange = Callable[[ServiceKey, Moves | None], None]


class ReplicaSync:
    """Publishes this replica's changes and hands the other replicas' ones to ``follow``.

    ``announce_service`` and ``announce_moves`` are the manager's ``ManagerCallbacks`` for
    the other replicas (``server.py`` wires them).
    """

    def __init__(self, redis: RedisClient, keys: KeySpace, replica_id: str) -> None:
        self._redis = redis
        self.channel = keys.replicas_channel
        self.replica_id = replica_id
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10_000)

    def announce_service(self, key: ServiceKey) -> None:
        """Tell the other replicas that the service's settings or pods changed."""
        self._announce(key, None)

    def announce_moves(self, key: ServiceKey, moves: Moves) -> None:
        """Tell the other replicas that these users moved (uid -> pod, None when unbound)."""
        self._announce(key, moves)

    def _announce(self, key: ServiceKey, moves: Moves | None) -> None:
        message = {"from": self.replica_id, "service": str(key), "moves": moves}
        try:
            self._outbox.put_nowait(message)
        except asyncio.QueueFull:  # Redis away for long: the others reload views on their own
            log.warning("replica_outbox_full service=%s", key)

    async def publish_forever(self) -> None:
        while True:
            message = await self._outbox.get()
            while True:
                try:
                    await self._redis.publish(self.channel, json.dumps(message))
                    break
                except RedisError as exc:
                    log.warning("replica_publish_failed error=%r", exc)
                    await asyncio.sleep(0.5)

    async def listen_forever(self, follow: RemoteChange) -> None:
        """Hand every other replica's announcement to ``follow``, until cancelled."""
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(self.channel)
                try:
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self.apply(message["data"], follow)
                finally:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            except RedisError as exc:
                log.warning("replica_listen_failed error=%r", exc)
                await asyncio.sleep(0.5)

    def apply(self, data: str, follow: RemoteChange) -> None:
        """One message from the channel (ours are ignored)."""
        try:
            message = json.loads(data)
            if message["from"] == self.replica_id:
                return
            namespace, name = str(message["service"]).split("/", 1)
            moves = message["moves"]
            key = ServiceKey.of(namespace, name)
            if moves is not None:
                moves = {str(uid): None if pod is None else int(pod) for uid, pod in moves.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("replica_message_ignored error=%r", exc)
            return
        follow(key, moves)
