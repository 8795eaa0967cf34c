"""Services, their pods and the pods' load reports."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar, cast

from controlplane.domain import EnvoyLoadShare, LoadReport, Pod, Service, ServiceKey
from controlplane.store import scripts
from controlplane.store.connection import RedisClient
from controlplane.store.keys import KeySpace, ServiceKeys

T = TypeVar("T")

_MAX_CAS_ATTEMPTS = 50


class ServiceRegistry:
    def __init__(self, redis: RedisClient, keyspace: KeySpace) -> None:
        self._redis = redis
        self._keyspace = keyspace
        self._set_if_unchanged = redis.register_script(scripts.SET_POD_IF_UNCHANGED)

    async def service_keys(self) -> list[ServiceKey]:
        members = cast(set[str], await self._redis.smembers(self._keyspace.services))
        return sorted(ServiceKey(*m.split("/", 1)) for m in members)

    async def put_service(self, service: Service) -> None:
        keys = self._keyspace.of(service.key)
        await self._redis.set(keys.service, service.model_dump_json())
        await self._redis.sadd(self._keyspace.services, str(service.key))

    async def get_service(self, key: ServiceKey) -> Service | None:
        raw = cast(str | None, await self._redis.get(self._keyspace.of(key).service))
        return None if raw is None else Service.model_validate_json(raw)

    async def delete_service(self, key: ServiceKey) -> None:
        """Forget a service and everything stored under its hash tag."""
        keys = self._keyspace.of(key)
        await self._redis.srem(self._keyspace.services, str(key))
        pods = cast(list[str], await self._redis.hkeys(keys.pods))
        await self._redis.delete(
            keys.service,
            keys.pods,
            keys.loads,
            keys.envoy_loads,
            keys.bindings,
            keys.last_seen,
            keys.events,
            keys.leases,
            keys.epoch,
            *(keys.pod_users(int(p)) for p in pods),
        )

    async def pods(self, keys: ServiceKeys) -> dict[int, Pod]:
        """Pods by index, each with its last load report."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.pods)
            pipe.hgetall(keys.loads)
            raw_pods, raw_loads = await pipe.execute()
        pods: dict[int, Pod] = {}
        for index, raw in raw_pods.items():
            pod = Pod.model_validate_json(raw)
            load = raw_loads.get(index)
            if load is not None:
                pod = pod.model_copy(update={"load": LoadReport.model_validate_json(load)})
            pods[pod.index] = pod
        return pods

    async def put_pod(self, keys: ServiceKeys, pod: Pod) -> None:
        await self._redis.hset(keys.pods, str(pod.index), _pod_json(pod))

    async def delete_pod(self, keys: ServiceKeys, index: int) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.pods, str(index))
            pipe.hdel(keys.loads, str(index))
            pipe.zrem(keys.leases, str(index))
            removed, *_ = await pipe.execute()
        return bool(removed)

    async def add_pod_at_free_index(self, keys: ServiceKeys, pod: Pod) -> Pod:
        """Write ``pod`` under the lowest index no pod holds (its own index is ignored).

        HSETNX claims an index atomically: two pods registering at once get two indices.
        """
        taken = {int(i) for i in cast(list[str], await self._redis.hkeys(keys.pods))}
        index = 0
        while True:
            while index in taken:
                index += 1
            pod = pod.model_copy(update={"index": index})
            if await self._redis.hsetnx(keys.pods, str(index), _pod_json(pod)):
                return pod
            taken.add(index)  # claimed by another meanwhile

    async def update_pod(
        self, keys: ServiceKeys, index: int, change: Callable[[Pod], tuple[Pod, T]]
    ) -> tuple[Pod, T] | None:
        """Read-modify-write one pod atomically (optimistic: retried if another writer won).

        The write is a compare-and-set script on the value read, so it needs no WATCH.

        ``change`` is pure and may run more than once. Returns None if the pod does not exist.
        """
        field = str(index)
        for _ in range(_MAX_CAS_ATTEMPTS):
            raw = cast(str | None, await self._redis.hget(keys.pods, field))
            if raw is None:
                return None
            pod, outcome = change(Pod.model_validate_json(raw))
            if await self._set_if_unchanged(keys=[keys.pods], args=[field, raw, _pod_json(pod)]):
                return pod, outcome
        raise RuntimeError(f"pod {index} kept changing under {_MAX_CAS_ATTEMPTS} attempts")

    async def raise_epochs(self, keys: ServiceKeys, indices: Iterable[int]) -> int | None:
        """Give the pods ``indices`` the service's next epoch (higher than any pod had before);
        returns it, or None if none of them exists."""
        epoch = int(await self._redis.incr(keys.epoch))
        raised = None
        for index in sorted(set(indices)):

            def to_epoch(pod: Pod) -> tuple[Pod, None]:
                return pod.model_copy(update={"epoch": max(pod.epoch, epoch)}), None

            if await self.update_pod(keys, index, to_epoch) is not None:
                raised = epoch
        return raised

    async def put_load(self, keys: ServiceKeys, index: int, load: LoadReport) -> None:
        await self._redis.hset(keys.loads, str(index), load.model_dump_json())

    async def put_envoy_load_share(
        self, keys: ServiceKeys, replica: str, share: EnvoyLoadShare
    ) -> None:
        """What the Envoys reporting to ``replica`` have in flight to each pod."""
        await self._redis.hset(keys.envoy_loads, replica, share.model_dump_json())

    async def envoy_load_shares(self, keys: ServiceKeys) -> dict[str, EnvoyLoadShare]:
        """Every replica's share, by replica id."""
        raw = cast(dict[str, str], await self._redis.hgetall(keys.envoy_loads))
        return {replica: EnvoyLoadShare.model_validate_json(v) for replica, v in raw.items()}

    async def drop_envoy_load_shares(self, keys: ServiceKeys, replicas: list[str]) -> None:
        if replicas:
            await self._redis.hdel(keys.envoy_loads, *replicas)


def _pod_json(pod: Pod) -> str:
    # Load lives in its own hash so frequent reports never race with health updates.
    return pod.model_dump_json(exclude={"load"})
