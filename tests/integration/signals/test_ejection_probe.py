"""Envoy ejects a pod that is gone and one that hangs alike; a connect tells them apart."""

from __future__ import annotations

import socket

from controlplane.signals.envoy_events import refuses_connections


async def test_a_port_nobody_listens_on_is_a_pod_that_is_gone() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    assert await refuses_connections(address)


async def test_a_pod_that_accepts_but_never_answers_is_not_gone() -> None:
    # A listening socket whose process never calls accept: the kernel completes the
    # handshake all the same, as it does for a stopped (SIGSTOP) pod.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        assert not await refuses_connections(address)
