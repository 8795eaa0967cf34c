"""The whole stack as ``stateful-route demo --tls`` runs it: Envoy speaks mutual TLS to the
control plane (REST and ADS), its miss path too, and the admin API is HTTPS only.

A user routed through Envoy is bound by the miss path over mTLS and sticks to its pod. The
miss path refuses a caller without the CA's client certificate, with another CA's, or with
one naming another group, and binds nothing for it. Plain HTTP to the admin port fails; the
CLI reaches it with ``--ca-file``.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from controlplane.runtime.pki import ThrowawayCa
from controlplane.runtime.stack import NAMESPACE, SERVICE, LocalStack, StackConfig
from controlplane.tls import client_context
from controlplane.xds.naming import GROUP_HEADER, MISS_PATH, SERVICE_HEADER, UID_HEADER
from tests.e2e.conftest import SERVICE_PATH, Client

pytestmark = [pytest.mark.envoy, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["rest", "ads"])
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[LocalStack]:
    stack = await LocalStack(StackConfig(pods=2, tls=True, transport=request.param)).start()
    yield stack
    await stack.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(stack: LocalStack) -> AsyncIterator[Client]:
    assert stack.tls is not None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=stack.tls.client)) as s:
        yield Client(stack, s)


async def test_envoy_follows_over_mtls_and_the_miss_path_binds_a_routed_user(
    client: Client,
) -> None:
    first = await client.ask("tls-alice")
    assert [(await client.ask("tls-alice"))["pod"] for _ in range(3)] == [first["pod"]] * 3
    assert await client.pod_of("tls-alice") == first["pod"]  # bound by the miss path
    [envoy] = await client.admin("GET", "/api/v1/envoys")
    assert envoy["node_group"] == "default"
    assert envoy["transport"] == client.stack.config.transport


def miss_call(uid: str, group: str = "default") -> dict[str, str]:
    return {SERVICE_HEADER: f"{NAMESPACE}/{SERVICE}", UID_HEADER: uid, GROUP_HEADER: group}


async def call_miss_path(stack: LocalStack, context: ssl.SSLContext | None, uid: str) -> int:
    scheme = "https" if context is not None else "http"
    url = f"{scheme}://127.0.0.1:{stack.xds_rest_port}{MISS_PATH}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, headers=miss_call(uid), ssl=context or False) as response,
    ):
        return response.status


async def is_bound(client: Client, uid: str) -> bool:
    url = f"{client.stack.admin_url}{SERVICE_PATH}/users/{uid}"
    headers = {"Authorization": f"Bearer {client.stack.token}"}
    async with client.session.get(url, headers=headers) as response:
        assert response.status in (200, 404), await response.text()
        return response.status == 200


def trusting_the_stack(stack: LocalStack) -> ssl.SSLContext:
    assert stack.ca_file is not None
    return client_context(stack.ca_file)


@pytest.mark.parametrize("caller", ["plain HTTP", "no certificate", "another CA's certificate"])
async def test_a_direct_call_to_the_miss_path_is_refused_and_binds_nothing(
    client: Client, tmp_path: Path, caller: str
) -> None:
    stack = client.stack
    uid = f"intruder-{caller.replace(' ', '-')}"
    context: ssl.SSLContext | None = None
    if caller != "plain HTTP":
        context = trusting_the_stack(stack)
    if caller == "another CA's certificate":
        stranger = ThrowawayCa(tmp_path, name="other").issue("stranger", "default")
        context.load_cert_chain(stranger.cert_file, stranger.key_file)  # type: ignore[union-attr]
    with pytest.raises(aiohttp.ClientError):
        await call_miss_path(stack, context, uid)
    assert not await is_bound(client, uid)


async def test_a_miss_path_call_naming_another_group_than_its_certificate_is_403(
    client: Client,
) -> None:
    stack = client.stack
    assert stack.tls is not None
    blue = stack.tls.ca.issue("blue-envoy", "blue")
    context = trusting_the_stack(stack)
    context.load_cert_chain(blue.cert_file, blue.key_file)
    assert await call_miss_path(stack, context, "intruder-blue") == 403
    assert not await is_bound(client, "intruder-blue")


async def test_plain_http_to_the_tls_admin_port_fails(client: Client) -> None:
    plain = client.stack.admin_url.replace("https://", "http://")
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession() as session, session.get(f"{plain}/healthz"):
            pass


async def test_the_admin_certificate_is_checked_against_the_ca(client: Client) -> None:
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{client.stack.admin_url}/healthz"),
        ):
            pass


def cli(stack: LocalStack, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "controlplane.cli", "status", "--admin", stack.admin_url]
    return subprocess.run(
        [*command, "--token", stack.token, *flags],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "STATEFUL_ROUTE_CA_FILE"},
    )


async def test_the_cli_reaches_the_tls_admin_api_with_ca_file(client: Client) -> None:
    stack = client.stack
    trusted = await asyncio.to_thread(cli, stack, "--ca-file", str(stack.ca_file))
    assert trusted.returncode == 0, trusted.stderr
    assert "pod" in trusted.stdout
    untrusted = await asyncio.to_thread(cli, stack)
    assert untrusted.returncode == 1
    assert "certificate" in untrusted.stderr
