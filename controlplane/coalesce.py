"""Serve the calls made in one event-loop turn with one batched call (one Redis round trip)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

G = TypeVar("G", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[G, T, R]):
    """Gathers ``(group, item)`` calls and runs ``batch(group, items)`` once per group and turn.

    ``batch`` returns one result per item, in order. An error fails every call of the batch.
    """

    def __init__(
        self,
        batch: Callable[[G, Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 512,
    ) -> None:
        self._batch = batch
        self._max_batch = max_batch
        self._pending: dict[G, list[tuple[T, asyncio.Future[R]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, group: G, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        waiting = self._pending.get(group)
        if waiting is None:
            waiting = self._pending[group] = []
            loop.call_soon(self._flush, group)
        waiting.append((item, future))
        if len(waiting) >= self._max_batch:
            self._flush(group)
        return await future

    def _flush(self, group: G) -> None:
        calls = self._pending.pop(group, None)
        if calls:
            task = asyncio.get_running_loop().create_task(self._run(group, calls))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, group: G, calls: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._batch(group, [item for item, _ in calls])
        except Exception as exc:  # handed to every waiting caller, who re-raises it
            for _, future in calls:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(calls, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def drain(self) -> None:
        """Wait for the batches in flight (used on shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
