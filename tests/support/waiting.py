"""Waiting for a condition with a deadline, never for a fixed time: ``wait_until`` for
synchronous tests, ``eventually`` for async ones (the end-to-end stack's tests poll with
``Client.until``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T], what: str, within_s: float = 10.0, every_s: float = 0.05
) -> T:
    """Call ``check`` until it returns something truthy and return that.

    Fails (AssertionError) after ``within_s`` seconds, naming ``what`` and the last value seen.
    """
    deadline = time.monotonic() + within_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s}s (last: {value!r})")
        time.sleep(every_s)


async def eventually(
    check: Callable[[], Awaitable[T]], what: str, within_s: float = 10.0, every_s: float = 0.05
) -> T:
    """``await check()`` until it returns something truthy and return that (as ``wait_until``)."""
    deadline = time.monotonic() + within_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s}s (last: {value!r})")
        await asyncio.sleep(every_s)
