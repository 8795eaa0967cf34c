"""Envoy fails a pod that is gone and one that hangs alike; one request tells them apart."""

from __future__ import annotations

import asyncio
import socket

from controlplane.signals.envoy_events import Liveness, liveness


async def test_a_port_nobody_listens_on_is_a_pod_that_is_gone() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    assert await liveness(address, "/health") is Liveness.GONE


async def test_a_pod_that_accepts_but_never_answers_is_silent() -> None:
    # A listening socket whose process never calls accept: the kernel completes the
    # handshake all the same, as it does for a stopped (SIGSTOP) pod.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        assert await liveness(address, "/health", timeout_s=0.2) is Liveness.SILENT


async def test_a_pod_that_answers_even_an_error_answers() -> None:
    # A pod failing with 5xx is not hung: what it has, it answers at once.
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        assert await liveness(f"127.0.0.1:{port}", "/health") is Liveness.ANSWERS
