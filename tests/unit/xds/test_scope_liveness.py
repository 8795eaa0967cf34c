"""The miss path answers only once every Envoy of the group holds the user's scope."""

from __future__ import annotations

import asyncio

from controlplane.xds.clients import ConnectedEnvoy, ConnectedEnvoys, Transport
from controlplane.xds.protocol import Reply, Verdict
from controlplane.xds.resources import SCOPED


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def acked(envoys: ConnectedEnvoys, envoy: ConnectedEnvoy, revision: int) -> None:
    envoys.record(envoy, SCOPED, Reply(Verdict.ACK, f"epoch.{revision}.0"))


async def test_the_wait_ends_when_the_last_envoy_of_the_group_acknowledges() -> None:
    envoys = ConnectedEnvoys(60)
    first = envoys.enter("a", "edge", Transport.DELTA)
    second = envoys.enter("b", "edge", Transport.ADS)
    acked(envoys, first, 3)
    acked(envoys, second, 2)
    waiting = asyncio.ensure_future(envoys.scopes_live("edge", 3, timeout_s=5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    acked(envoys, second, 3)
    assert await waiting is True


async def test_other_groups_and_envoys_without_scopes_are_not_waited_for() -> None:
    envoys = ConnectedEnvoys(60)
    behind = envoys.enter("a", "other", Transport.DELTA)
    acked(envoys, behind, 0)
    envoys.enter("new", "edge", Transport.DELTA)  # connecting: it gets every scope anyway
    assert await envoys.scopes_live("edge", 7, timeout_s=0.01) is True


async def test_an_envoy_that_never_acknowledges_ends_the_wait_at_its_timeout() -> None:
    envoys = ConnectedEnvoys(60)
    stuck = envoys.enter("a", "edge", Transport.DELTA)
    acked(envoys, stuck, 1)
    assert await envoys.scopes_live("edge", 2, timeout_s=0.05) is False


async def test_a_stream_that_closes_is_waited_for_no_longer() -> None:
    envoys = ConnectedEnvoys(60)
    gone = envoys.enter("a", "edge", Transport.DELTA)
    acked(envoys, gone, 1)
    waiting = asyncio.ensure_future(envoys.scopes_live("edge", 2, timeout_s=5))
    await asyncio.sleep(0.01)
    envoys.leave(gone)
    assert await waiting is True


async def test_a_rest_envoy_gone_quiet_is_not_waited_for() -> None:
    clock = Clock()
    envoys = ConnectedEnvoys(60, clock=clock)
    rest = envoys.enter("a", "edge", Transport.REST)
    acked(envoys, rest, 1)
    envoys.leave(rest)  # between polls: waited for a moment
    assert await envoys.scopes_live("edge", 2, timeout_s=0.02) is False
    clock.now += 5  # no poll since: an Envoy that stopped
    assert await envoys.scopes_live("edge", 2, timeout_s=0.02) is True
