from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from controlplane.domain import Pod, Service, ServiceKey, ServiceSettings, Strategy
from controlplane.manager import StatefulRouteManager
from controlplane.store import Store

NS, SVC = "games", "lobby"
KEY = ServiceKey(NS, SVC)

MakeService = Callable[..., Coroutine[Any, Any, StatefulRouteManager]]


class Clock:
    """The manager's clock: ``time.time`` until a test sets ``now``."""

    def __init__(self) -> None:
        self.now: float | None = None

    def __call__(self) -> float:
        return time.time() if self.now is None else self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def manager(store: Store, clock: Clock) -> AsyncIterator[StatefulRouteManager]:
    manager = StatefulRouteManager(store, clock=clock)
    yield manager
    await manager.close()


@pytest.fixture
def make_service(manager: StatefulRouteManager) -> MakeService:
    """Register games/lobby with pods of the given weights (pod i has weights[i])."""

    async def make(
        weights: tuple[int, ...] = (1, 1, 1, 1), strategy: Strategy = Strategy.BOUNDED_HASH
    ) -> StatefulRouteManager:
        settings = ServiceSettings(strategy=strategy)
        await manager.register_service(Service(namespace=NS, name=SVC, settings=settings))
        for index, weight in enumerate(weights):
            pod = Pod(index=index, host="127.0.0.1", port=9000 + index, weight=weight)
            await manager.upsert_pod(KEY, pod)
        return manager

    return make
