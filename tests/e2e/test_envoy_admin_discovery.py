"""Envoy admin APIs found from the node metadata Envoys send, and polled for ejections.

No admin URL is configured and no file is shared with Envoy; load reports come once a minute
and pods are checked every 30 s: a pod failure found within seconds was found by polling the
admin API that Envoy named in its node metadata.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from controlplane.runtime.stack import LocalStack, StackConfig
from tests.support.envoy_wheels import binary_version

from .conftest import Client, kill_while_asked

pytestmark = [pytest.mark.envoy, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[LocalStack]:
    config = StackConfig(
        pods=3,
        transport="ads",
        share_event_log=False,
        health_interval_s=30.0,
        extra_settings={
            "signals": {
                "poll_discovered_envoys": True,
                "stats_poll_s": 0.1,
                "load_report_interval_s": 60.0,
            }
        },
    )
    stack = await LocalStack(config).start()
    yield stack
    await stack.stop()


async def test_an_envoy_is_known_by_the_admin_api_its_node_names_and_by_its_version(
    stack: LocalStack, client: Client
) -> None:
    assert stack.envoy is not None
    [envoy] = await client.admin("GET", "/api/v1/envoys")
    assert envoy["admin_url"] == stack.envoy.admin_url
    assert envoy["envoy_version"] == str(binary_version(stack.envoy.binary))


async def test_an_ejection_polled_from_a_discovered_envoy_fails_the_pod(
    stack: LocalStack, client: Client
) -> None:
    kill = await kill_while_asked(client, stack, "admin-eject", 12, "ejected")
    victim, detected = kill.victim, kill.detected_s
    assert "failed_outlier_check" in (await client.pods())[victim]["reason"]
    print(f"\nkill -9 -> pod ejected via a discovered Envoy's admin API: {detected:.2f}s")
    await stack.restart_pod(victim)
