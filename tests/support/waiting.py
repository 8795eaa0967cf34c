"""Waiting for a condition with a deadline, never for a fixed time (for synchronous tests;
the end-to-end stack's async tests poll with ``Client.until``)."""

from __future__ import annotations

import time
from collections.abc import Callable
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
