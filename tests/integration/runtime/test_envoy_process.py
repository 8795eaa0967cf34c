"""Starting a real Envoy: a start that fails stops what it started and says why."""

from __future__ import annotations

import pytest

from controlplane.runtime.envoy import EnvoyProcess, bundled_bootstrap, load_bootstrap
from controlplane.runtime.ports import free_port

pytestmark = pytest.mark.envoy


async def test_an_envoy_that_never_gets_its_configuration_is_stopped_and_its_session_closed() -> (
    None
):
    # Nobody answers xDS on this port: Envoy never becomes ready.
    config = load_bootstrap(bundled_bootstrap("ads"), xds_port=free_port())
    envoy = EnvoyProcess(config, start_timeout_s=1.0)
    try:
        with pytest.raises(TimeoutError, match=r"envoy not ready in 1\.0s"):
            await envoy.start()
        assert envoy.process is None  # stopped, by its PID
        assert envoy._http is None  # no session left open for the garbage collector to find
    finally:
        await envoy.close()
