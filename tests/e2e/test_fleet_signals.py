"""Envoy's signals over the network: load reports (LRS) and admin APIs found from the node.

The stack here shares no file between Envoy and the control plane (no outlier event log),
polls no Envoy admin API and checks pods every 30 s: a pod failure found within seconds, and
a pod's requests in flight, come from Envoy's load reports.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from controlplane.runtime.stack import LocalStack, StackConfig

from .conftest import Client, kill_while_asked

pytestmark = [pytest.mark.envoy, pytest.mark.asyncio(loop_scope="module")]

LOAD_REPORT_INTERVAL_S = 0.2


# ADS bootstraps report over their xDS cluster, the REST one over its own gRPC cluster.
@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["ads", "rest"])
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[LocalStack]:
    config = StackConfig(
        pods=4,
        transport=request.param,
        share_event_log=False,
        health_interval_s=30.0,
        # No admin polling: load and failures come from the load reports alone.
        extra_settings={
            "signals": {
                "load_report_interval_s": LOAD_REPORT_INTERVAL_S,
                "poll_discovered_envoys": False,
            }
        },
    )
    stack = await LocalStack(config).start()
    yield stack
    await stack.stop()


async def test_requests_in_flight_through_envoy_are_a_pods_load(
    stack: LocalStack, client: Client
) -> None:
    uid = "lrs-load"
    pod = (await client.ask(uid))["pod"]
    process = stack.pods[pod].process
    assert process is not None
    # A stopped pod accepts connections but answers none: its requests stay in flight (and
    # it stops reporting its own load).
    process.send_signal(signal.SIGSTOP)
    hanging = [asyncio.create_task(client.ask(uid)) for _ in range(5)]
    try:

        async def loaded() -> bool:
            return bool((await client.pods())[pod]["active_requests"] >= len(hanging))

        await client.until(loaded, timeout_s=10.0)
    finally:
        process.send_signal(signal.SIGCONT)
    await asyncio.gather(*hanging)

    async def idle() -> bool:
        return bool((await client.pods())[pod]["active_requests"] == 0)

    await client.until(idle, timeout_s=10.0)


async def test_a_killed_pod_is_failed_by_envoys_load_reports_and_its_users_move(
    stack: LocalStack, client: Client
) -> None:
    kill = await kill_while_asked(client, stack, "lrs-kill", 16, "down")
    victim, victims = kill.victim, kill.victims
    detected, rebound = kill.detected_s, kill.rebound_s
    pod = (await client.pods())[victim]
    assert "envoy load reports" in pod["reason"]
    for uid in victims:
        assert (await client.ask(uid))["pod"] != victim
    print(
        f"\n{stack.config.transport}: kill -9 -> pod down via LRS "
        f"({LOAD_REPORT_INTERVAL_S}s interval, no log tail): "
        f"{detected:.2f}s; users re-bound: {rebound:.2f}s ({pod['reason']})"
    )
    await stack.restart_pod(victim)
