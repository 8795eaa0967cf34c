"""Calls made in one event-loop turn share one batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from controlplane.coalesce import Coalescer


async def test_calls_in_one_turn_are_served_by_one_batch_per_group() -> None:
    batches: list[tuple[str, list[int]]] = []

    async def double(group: str, items: Sequence[int]) -> list[int]:
        batches.append((group, list(items)))
        return [2 * i for i in items]

    coalesce: Coalescer[str, int, int] = Coalescer(double)
    results = await asyncio.gather(coalesce("a", 1), coalesce("b", 2), coalesce("a", 3))
    assert results == [2, 4, 6]
    assert sorted(batches) == [("a", [1, 3]), ("b", [2])]


async def test_a_full_batch_is_sent_without_waiting_for_the_turn_to_end() -> None:
    sizes: list[int] = []

    async def echo(group: str, items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        return list(items)

    coalesce: Coalescer[str, int, int] = Coalescer(echo, max_batch=4)
    assert await asyncio.gather(*(coalesce("g", i) for i in range(10))) == list(range(10))
    assert sizes == [4, 4, 2]


async def test_a_failed_batch_fails_each_of_its_callers() -> None:
    async def broken(group: str, items: Sequence[int]) -> list[int]:
        raise ConnectionError("redis gone")

    coalesce: Coalescer[str, int, int] = Coalescer(broken)
    results = await asyncio.gather(coalesce("g", 1), coalesce("g", 2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    with pytest.raises(ConnectionError):
        await coalesce("g", 3)
