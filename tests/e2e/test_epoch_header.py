"""The epoch header through a real Envoy: a migrated user's requests on its new pod carry a
higher epoch than it saw on its old pod, and a client cannot send its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from controlplane.runtime.demo_pod import EPOCH_HEADER
from controlplane.runtime.stack import LocalStack, StackConfig

from .conftest import SERVICE_PATH, Client

pytestmark = [pytest.mark.envoy, pytest.mark.asyncio(loop_scope="module")]

FORGED = {EPOCH_HEADER: "999999"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client() -> AsyncIterator[Client]:
    settings = {"failover": {"epoch_header": EPOCH_HEADER}}
    stack = await LocalStack(StackConfig(pods=2, service_settings=settings)).start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(stack, session)
    finally:
        await stack.stop()


async def migrate(client: Client, uid: str, target: int) -> list[dict[str, Any]]:
    """Move ``uid`` to pod ``target``; every answer it got (forging an epoch) until it
    landed there."""
    await client.admin("PUT", f"{SERVICE_PATH}/users/{uid}", {"pod": target})
    answers: list[dict[str, Any]] = []

    async def landed() -> bool:
        answers.append(await client.ask(uid, **FORGED))
        return bool(answers[-1]["pod"] == target)

    await client.until(landed, timeout_s=5)
    return answers


async def test_a_migrated_user_sees_a_higher_epoch_on_its_new_pod(client: Client) -> None:
    first = await client.ask("mover", **FORGED)
    source, target = first["pod"], 1 - first["pod"]
    assert first["epoch"] == 0  # the pod's own, not the client's
    on_target = await migrate(client, "mover", target)
    # From its first answer on the new pod: the route carried the new epoch before the scope.
    raised = [a["epoch"] for a in on_target if a["pod"] == target]
    assert raised
    assert all(epoch > first["epoch"] for epoch in raised)
    assert all(a["epoch"] == first["epoch"] for a in on_target if a["pod"] == source)
    back = await migrate(client, "mover", source)
    assert all(a["epoch"] > raised[-1] for a in back if a["pod"] == source)
    assert (await client.ask("mover"))["epoch"] > raised[-1]


async def test_a_user_who_stayed_keeps_its_pods_epoch(client: Client) -> None:
    before = await client.ask("stayer")
    again = await client.ask("stayer", **FORGED)
    assert again["pod"] == before["pod"]
    assert again["epoch"] == before["epoch"] != int(FORGED[EPOCH_HEADER])
