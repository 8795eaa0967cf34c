"""One fleet on separate network namespaces per test module; skipped where they cannot be made."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from controlplane.runtime.envoy import find_envoy_binary
from controlplane.runtime.redis_server import find_redis_binary
from tests.support.fleet import Fleet, unavailable_reason


def _missing() -> str | None:
    try:
        find_envoy_binary()
        find_redis_binary()
    except FileNotFoundError as exc:
        return str(exc)
    return unavailable_reason()


@pytest.fixture(scope="session")
def fleet_possible() -> None:
    reason = _missing()
    if reason is not None:
        pytest.skip(f"no fleet on this machine: {reason}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(fleet_possible: None) -> AsyncIterator[Fleet]:
    fleet = await Fleet().start()
    try:
        yield fleet
    finally:
        await fleet.stop()
