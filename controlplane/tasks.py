"""Stopping background tasks so that a stop always ends.

One ``cancel()`` is a request, and a task can lose it: on Python 3.11, ``asyncio.wait_for``
returns its inner result when the cancel arrives in the loop round the inner call finished
in, and the loop around it goes on. ``cancel_all`` therefore cancels again, naming the task
that ignored the first request, until every task has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("stateful_route.tasks")

# How long a cancelled task may take to end before it is cancelled again.
RECANCEL_AFTER_S = 1.0


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until all have ended; their results and errors are dropped."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_AFTER_S)
        for task in pending:
            log.warning("task_ignored_cancel task=%s", task.get_name())
            task.cancel()
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved
