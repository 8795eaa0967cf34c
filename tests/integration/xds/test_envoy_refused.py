"""A real Envoy older than the control plane supports is refused at its first request, on
every transport, and logged once however often it comes back."""

from __future__ import annotations

import logging

import pytest

from controlplane.xds.clients import Transport
from controlplane.xds.envoy_version import EnvoyVersion
from tests.integration.xds.conftest import eventually, make_envoy
from tests.support.envoy_wheels import binary_version
from tests.support.state import MemoryStateSource, service_state
from tests.support.xds_stack import XdsStack

pytestmark = [pytest.mark.envoy]

# Above every real Envoy: the one under test is "too old".
UNREACHABLE = EnvoyVersion(99, 0)


@pytest.mark.parametrize("transport", list(Transport))
async def test_an_envoy_below_the_minimum_gets_no_config_and_one_log_line(
    transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    source = MemoryStateSource([service_state("games", "lobby", [9000])])
    stack = await XdsStack(source, minimum_envoy=UNREACHABLE).start()
    envoy = make_envoy(transport, stack)
    # Without config Envoy turns ready only once its first fetch times out (15 s by default).
    for kind in ("cds_config", "lds_config"):
        envoy.config["dynamic_resources"][kind]["initial_fetch_timeout"] = "0.2s"
    try:
        with caplog.at_level(logging.INFO, logger="controlplane.xds.envoy_version"):
            await envoy.start()

            async def refused_twice() -> bool:
                stats = await envoy.get("/stats?filter=^cluster_manager.cds.update_failure$")
                return int(stats.rpartition(": ")[2] or 0) >= 2

            await eventually(refused_twice, within_s=10)
        dynamic = await envoy.config_dump("dynamic_active_clusters")
        assert dynamic.get("configs", []) == []
        assert stack.xds.envoys() == []
    finally:
        await envoy.close()
        await stack.stop()
    lines = [r.getMessage() for r in caplog.records]
    version = binary_version(envoy.binary)
    assert len(lines) == 1, lines
    assert "refused" in lines[0]
    assert f"version={version}" in lines[0]
    assert f"minimum={UNREACHABLE}" in lines[0]
