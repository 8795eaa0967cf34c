"""``admin.tls.client_ca_file``: the admin API over HTTPS wants a client certificate of that
CA, besides the token; without one, or with another CA's, no request gets in."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from controlplane.admin import AdminSettings, create_admin_app
from controlplane.manager import StatefulRouteManager
from controlplane.runtime.pki import ThrowawayCa
from controlplane.store import Store
from controlplane.tls import ReloadingServerContext, ServerTlsSettings, client_context


@pytest.fixture
def ca(tmp_path: Path) -> ThrowawayCa:
    return ThrowawayCa(tmp_path / "ca")


@pytest.fixture
async def admin_url(store: Store, ca: ThrowawayCa) -> AsyncIterator[str]:
    cert = ca.issue_server()
    tls = ServerTlsSettings(
        cert_file=cert.cert_file, key_file=cert.key_file, client_ca_file=ca.ca_file
    )
    app = create_admin_app(StatefulRouteManager(store), AdminSettings())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        context = ReloadingServerContext(tls).context
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        host, port = runner.addresses[0][:2]
        yield f"https://{host}:{port}"
    finally:
        await runner.cleanup()


async def healthz(url: str, context: ssl.SSLContext) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz", ssl=context) as r:
        return r.status


async def test_a_client_certificate_of_the_ca_gets_in(admin_url: str, ca: ThrowawayCa) -> None:
    context = client_context(ca.ca_file)
    operator = ca.issue("operator", "operator.example")
    context.load_cert_chain(operator.cert_file, operator.key_file)
    assert await healthz(admin_url, context) == 200


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
async def test_without_a_client_certificate_of_the_ca_nothing_gets_in(
    admin_url: str, ca: ThrowawayCa, tmp_path: Path, who: str
) -> None:
    context = client_context(ca.ca_file)
    if who != "no certificate":
        stranger = ThrowawayCa(tmp_path / "other", name="other").issue("x", "operator.example")
        context.load_cert_chain(stranger.cert_file, stranger.key_file)
    with pytest.raises(aiohttp.ClientError):
        await healthz(admin_url, context)
