"""The system resolver's answers sorted into "these addresses", "no such name" and "could not
ask", with getaddrinfo replaced (no DNS is asked)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from controlplane.discovery.resolver import AddressFamily, SystemResolver


def answering(result: Any, delay_s: float = 0.0) -> Any:
    async def getaddrinfo(host: str, port: object, **_: object) -> Any:
        await asyncio.sleep(delay_s)
        if isinstance(result, BaseException):
            raise result
        return result

    return getaddrinfo


@pytest.fixture
async def loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def test_addresses_come_once_each_in_the_resolvers_order(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    infos = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.2", 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.2", 0)),
    ]
    monkeypatch.setattr(loop, "getaddrinfo", answering(infos))
    answer = await SystemResolver().resolve("pod-0")
    assert answer.addresses == ("10.0.0.2", "10.0.0.1")


@pytest.mark.parametrize("errno", [socket.EAI_NONAME, socket.EAI_NODATA])
async def test_no_such_name_is_a_missing_name(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch, errno: int
) -> None:
    monkeypatch.setattr(loop, "getaddrinfo", answering(socket.gaierror(errno, "not known")))
    answer = await SystemResolver().resolve("pod-0")
    assert (answer.addresses, answer.missing, answer.error) == ((), True, "not known")


@pytest.mark.parametrize("errno", [socket.EAI_AGAIN, socket.EAI_FAIL])
async def test_a_resolver_failure_is_no_answer_about_the_name(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch, errno: int
) -> None:
    monkeypatch.setattr(loop, "getaddrinfo", answering(socket.gaierror(errno, "try again")))
    answer = await SystemResolver().resolve("pod-0")
    assert (answer.missing, answer.outcome) == (False, "unanswered")


async def test_a_lookup_past_the_timeout_is_no_answer_and_frees_no_slot_early(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "getaddrinfo", answering([], delay_s=0.3))
    resolver = SystemResolver(AddressFamily.IPV4, timeout_s=0.05, concurrency=1)
    answer = await resolver.resolve("slow-0")
    assert (answer.outcome, answer.error) == ("unanswered", "no answer within 0.05 s")
    # The one slot is held until the abandoned lookup ends: the next waits for it.
    started = loop.time()
    await resolver.resolve("slow-1")
    assert loop.time() - started >= 0.1
