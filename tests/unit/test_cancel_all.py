"""Stopping background tasks: a stop ends even when a task loses its first cancel."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from controlplane import tasks
from controlplane.tasks import cancel_all


async def test_every_task_has_ended_when_it_returns() -> None:
    sleepers = [asyncio.create_task(asyncio.sleep(60)) for _ in range(3)]
    await cancel_all(sleepers)
    assert all(task.cancelled() for task in sleepers)


async def test_a_task_that_swallows_its_first_cancel_is_cancelled_again_and_named(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks, "RECANCEL_AFTER_S", 0.01)

    async def stubborn_loop() -> None:
        # As a loop around 3.11's wait_for behaves when a cancel meets a finished inner call.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(60)
        await asyncio.Event().wait()  # only a second cancel ends this

    task = asyncio.create_task(stubborn_loop(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="stateful_route.tasks"):
        await asyncio.wait_for(cancel_all([task]), timeout=5)
    assert task.cancelled()
    assert "task_ignored_cancel task=stubborn" in caplog.text


async def test_errors_of_ended_tasks_are_taken_not_raised() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_all([failed])  # no raise
    assert isinstance(failed.exception(), RuntimeError)
