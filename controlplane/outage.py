"""Redis outages in the background loops: one WARNING when Redis becomes unreachable, one
INFO with the outage's length when it answers again, instead of a traceback per failed round.

The loops (upkeep jobs, health checks) report a failure to reach Redis to one shared
``RedisOutage``; the first report starts the outage and a probe that pings Redis until it
answers. Any other exception is unexpected and still logged with its traceback by the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import ClusterDownError, ConnectionError, RedisError, TimeoutError

from controlplane.errors import StoreUnavailable
from controlplane.tasks import cancel_all

log = logging.getLogger("stateful_route.redis")
upkeep_log = logging.getLogger("stateful_route.server")

# Redis is away (down, restarting, loading its data, failing over), not the code wrong.
UNREACHABLE: tuple[type[Exception], ...] = (
    ConnectionError,  # also BusyLoadingError and Sentinel's MasterNotFoundError
    TimeoutError,
    ClusterDownError,
    StoreUnavailable,
)


class RedisOutage:
    """Whether Redis is reachable, as the background loops found it; owns its probe task."""

    def __init__(
        self,
        ping: Callable[[], Awaitable[object]],
        *,
        probe_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ping = ping
        self._probe_s = probe_s
        self._clock = clock
        self._since: float | None = None
        self._probe: asyncio.Task[None] | None = None

    @property
    def unreachable(self) -> bool:
        return self._since is not None

    def failed(self, job: str, error: Exception) -> None:
        """``job`` could not reach Redis: the first such report of an outage is logged."""
        if self._since is not None:
            log.debug("redis_still_unreachable job=%s error=%r", job, error)
            return
        self._since = self._clock()
        log.warning("redis_unreachable job=%s error=%r", job, error)
        self._probe = asyncio.create_task(self._until_back(), name="redis-outage-probe")

    async def close(self) -> None:
        if self._probe is not None:
            await cancel_all([self._probe])

    async def _until_back(self) -> None:
        while True:
            await asyncio.sleep(self._probe_s)
            try:
                await self._ping()
            except RedisError:
                continue
            break
        assert self._since is not None
        outage_s = self._clock() - self._since
        self._since = None
        log.info("redis_back outage_s=%.1f", outage_s)


async def run_every(
    interval_s: float, job: Callable[[], Awaitable[object]], name: str, outage: RedisOutage
) -> None:
    """Run ``job`` every ``interval_s`` forever; Redis outages go to ``outage``, any other
    error is logged with its traceback and the job runs again next round."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await job()
        except UNREACHABLE as exc:
            outage.failed(name, exc)
        except Exception:
            upkeep_log.exception("upkeep_failed job=%s", name)
