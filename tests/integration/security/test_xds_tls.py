"""xDS over mutual TLS, on the real listeners (aiohttp REST, grpclib ADS) with real handshakes.

A client certificate of the configured CA that names the node group asked for is served; no
certificate, one of another CA, or one naming another group is refused, and the refused
client never shows among the connected Envoys. The server's certificate is rotated by
rewriting its files: the next connection gets the new one, with no restart.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from controlplane.runtime.pki import CertFiles, ThrowawayCa
from controlplane.tls import client_context
from controlplane.xds import resources as res
from controlplane.xds import wire
from controlplane.xds.config import XdsSettings, XdsTlsSettings
from tests.support.raw_grpc import Raw
from tests.support.state import MemoryStateSource
from tests.support.waiting import eventually
from tests.support.xds_stack import XdsStack

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
# What a refused TLS client may see: the handshake fails, or the connection is closed at once.
REFUSED = (aiohttp.ClientError, ssl.SSLError, ConnectionError, StreamTerminatedError, OSError)


@dataclass(frozen=True)
class Pki:
    ca: ThrowawayCa
    server: CertFiles
    default_envoy: CertFiles  # names node group "default"
    blue_envoy: CertFiles  # names node group "blue"
    stranger: CertFiles  # names "default", from another CA


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = ThrowawayCa(tmp_path / "ca")
    other = ThrowawayCa(tmp_path / "other", name="other")
    return Pki(
        ca,
        ca.issue_server(),
        ca.issue("envoy-default", "default"),
        ca.issue("envoy-blue", "blue"),
        other.issue("stranger", "default"),
    )


@pytest.fixture
async def stack(pki: Pki) -> AsyncIterator[XdsStack]:
    tls = XdsTlsSettings(
        cert_file=pki.server.cert_file,
        key_file=pki.server.key_file,
        client_ca_file=pki.ca.ca_file,
        reload_every_s=0.05,
    )
    stack = await XdsStack(MemoryStateSource(), XdsSettings(tls=tls, long_poll_hold_s=0)).start()
    yield stack
    await stack.stop()


def client_tls(pki: Pki, cert: CertFiles | None, *, alpn: str = "http/1.1") -> ssl.SSLContext:
    context = client_context(pki.ca.ca_file)
    context.set_alpn_protocols([alpn])
    if cert is not None:
        context.load_cert_chain(cert.cert_file, cert.key_file)
    return context


async def rest_poll(stack: XdsStack, context: ssl.SSLContext, group: str) -> tuple[int, str]:
    body = json.dumps({"node": {"id": f"envoy-{group}", "cluster": group}})
    url = f"https://127.0.0.1:{stack.rest_port}/v3/discovery:clusters"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, ssl=context) as response,
    ):
        return response.status, await response.text()


async def ads_responses(stack: XdsStack, context: ssl.SSLContext, group: str) -> int:
    """Open an ADS stream as a node of ``group`` asking for clusters; responses within 1 s."""
    node = wire.text(1, f"envoy-{group}") + wire.text(2, group)
    request = wire.field(2, node) + wire.text(4, res.CLUSTER)
    channel = Channel("127.0.0.1", stack.grpc_port, ssl=context)
    try:
        async with channel.request(ADS, Cardinality.STREAM_STREAM, Raw, Raw, timeout=5) as stream:
            await stream.send_message(Raw(request))
            replies = 0
            try:
                while True:
                    await asyncio.wait_for(stream.recv_message(), 1.0)
                    replies += 1
            except TimeoutError:
                await stream.cancel()
            return replies
    finally:
        channel.close()


async def test_a_certificate_of_the_ca_naming_its_group_is_served_over_rest_and_ads(
    stack: XdsStack, pki: Pki
) -> None:
    status, _ = await rest_poll(stack, client_tls(pki, pki.default_envoy), "default")
    assert status == 200
    assert await ads_responses(stack, client_tls(pki, pki.default_envoy, alpn="h2"), "default")


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
async def test_a_client_without_a_certificate_of_the_ca_is_refused(
    stack: XdsStack, pki: Pki, who: str
) -> None:
    cert = None if who == "no certificate" else pki.stranger
    with pytest.raises(REFUSED):
        await rest_poll(stack, client_tls(pki, cert), "default")
    with pytest.raises(REFUSED):
        await ads_responses(stack, client_tls(pki, cert, alpn="h2"), "default")
    assert stack.xds.envoys() == []


async def test_plain_http_to_the_xds_port_is_refused(stack: XdsStack) -> None:
    url = f"http://127.0.0.1:{stack.rest_port}/v3/discovery:clusters"
    body = json.dumps({"node": {"id": "plain", "cluster": "default"}})
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession() as session, session.post(url, data=body):
            pass
    assert stack.xds.envoys() == []


async def test_a_node_claiming_another_group_is_refused_with_the_reason(
    stack: XdsStack, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    status, text = await rest_poll(stack, client_tls(pki, pki.blue_envoy), "default")
    assert status == 403
    assert "does not name node group 'default'" in text
    with pytest.raises(GRPCError) as refused:
        await ads_responses(stack, client_tls(pki, pki.blue_envoy, alpn="h2"), "default")
    assert refused.value.status is Status.PERMISSION_DENIED
    assert "does not name node group 'default'" in str(refused.value.message)
    assert stack.xds.envoys() == []
    # The same refusal again (an Envoy retrying) is not logged again.
    await rest_poll(stack, client_tls(pki, pki.blue_envoy), "default")
    assert len([r for r in caplog.records if "xds_peer_refused" in r.getMessage()]) == 1


async def test_its_own_group_stays_open_to_the_other_groups_certificate(
    stack: XdsStack, pki: Pki
) -> None:
    status, _ = await rest_poll(stack, client_tls(pki, pki.blue_envoy), "blue")
    assert status == 200


async def served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return der
    finally:
        writer.close()


async def test_a_rotated_server_certificate_is_served_to_new_connections_without_restart(
    stack: XdsStack, pki: Pki
) -> None:
    rest = client_tls(pki, pki.default_envoy)
    listeners = [
        (stack.rest_port, rest),
        (stack.grpc_port, client_tls(pki, pki.default_envoy, alpn="h2")),
    ]
    before = [await served_certificate(port, context) for port, context in listeners]

    pki.ca.issue_server()  # the same files, a new key and certificate

    async def served_now() -> list[bytes]:
        return [await served_certificate(port, context) for port, context in listeners]

    async def rotated() -> bool:
        now = await served_now()
        return all(new != old for new, old in zip(now, before, strict=True))

    await eventually(rotated, "the new certificate served on both listeners", within_s=5.0)
    status, _ = await rest_poll(stack, rest, "default")
    assert status == 200
