"""The dashboard in a real headless Chromium, against a real Redis-backed admin server.

Set ``DASHBOARD_SCREENSHOT=/tmp/dashboard.png`` to keep a picture of the page after a drain,
``DASHBOARD_CHARTS_SCREENSHOT=...`` for one after a failover (docs/img/dashboard.png).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from admin_support import NAMESPACE, SERVICE, TOKEN, given_service
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from controlplane.admin import AdminSettings, create_admin_app
from controlplane.admin.envoy_status import EnvoyStatus, envoy_status
from controlplane.domain import LoadReport, ServiceKey
from controlplane.manager import StatefulRouteManager
from controlplane.xds.clients import EnvoyView, Transport, TypeStatusView
from tests.support.browser import Chromium, Page, find_chromium

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
# A uid is any visible ASCII: this one is markup that would run a script if parsed as HTML.
HOSTILE_UID = "<img/src=x/onerror=window.pwned=1>&amp;"


def envoys() -> list[EnvoyStatus]:
    """One Envoy behind on its Listener (it NACKed v7), one up to date."""
    current = {CLUSTER: ("v7",), LISTENER: ("v7",)}
    views = [
        EnvoyView(
            node_id="edge-envoy-1",
            node_group="edge",
            transport=Transport.ADS,
            connected_since=1_700_000_000.0,
            last_seen=1_700_000_100.0,
            types={
                CLUSTER: TypeStatusView(acked_version="v7"),
                LISTENER: TypeStatusView(
                    acked_version="v6", nacked_version="v7", nack_message="<b>bad</b> filter"
                ),
            },
        ),
        EnvoyView(
            node_id="edge-envoy-2",
            node_group="edge",
            transport=Transport.ADS,
            connected_since=1_700_000_050.0,
            last_seen=1_700_000_100.0,
            types={CLUSTER: TypeStatusView(acked_version="v7")},
        ),
    ]
    return [envoy_status(view, current) for view in views]


@pytest.fixture
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    return binary


@pytest.fixture
async def server(
    aiohttp_server: AiohttpServer, manager: StatefulRouteManager, settings: AdminSettings
) -> TestServer:
    """games/lobby with 3 pods; alice on pod 1, the hostile uid on pod 2; one Envoy."""
    await given_service(manager, pods=3)
    await manager.migrate_user(ServiceKey(NAMESPACE, SERVICE), "alice", 1, "seed")
    await manager.migrate_user(ServiceKey(NAMESPACE, SERVICE), HOSTILE_UID, 2, "seed")
    await manager.report_load(
        ServiceKey(NAMESPACE, SERVICE), 0, LoadReport(load_state=72, active_requests=9)
    )
    return await aiohttp_server(create_admin_app(manager, settings, envoys_view=envoys))


@pytest.fixture
async def tab(chromium: str, server: TestServer) -> AsyncIterator[Page]:
    """The dashboard, just opened; no script error or blocked request may happen in it."""
    async with Chromium.launch(chromium) as browser:
        opened = await browser.new_page()
        await opened.goto(str(server.make_url("/")))
        yield opened
        assert opened.errors == []


@pytest.fixture
async def page(tab: Page) -> Page:
    """The dashboard, showing the pods of games/lobby."""
    await tab.wait_for("document.querySelectorAll('#pods tbody tr').length === 3")
    return tab


def pod_cell(index: int, column: int) -> str:
    return f"#pods tbody tr[data-pod='{index}'] td:nth-child({column})"


async def look_up(page: Page, uid: str) -> str:
    await page.evaluate("document.querySelector('#lookup-result').textContent = ''")
    await page.fill("#uid", uid)
    await page.click("#lookup-form button[type=submit]")
    return str(await page.wait_for("document.querySelector('#lookup-result').textContent"))


async def use_token(page: Page, token: str) -> None:
    await page.fill("#token", token)
    await page.click("#token-form button[type=submit]")


async def test_the_dashboard_shows_the_service_its_pods_and_the_envoys(page: Page) -> None:
    assert await page.evaluate("document.querySelector('#service').value") == "games/lobby"
    addresses = await page.evaluate(
        "[...document.querySelectorAll('#pods tbody tr td:nth-child(2)')].map(c => c.textContent)"
    )
    assert addresses == ["10.0.0.0:8080", "10.0.0.1:8080", "10.0.0.2:8080"]
    assert await page.text(pod_cell(1, 3)) == "healthy"
    assert await page.text(pod_cell(0, 6)) == "72 %"
    assert await page.text(pod_cell(0, 7)) == "9"
    assert [await page.text(pod_cell(i, 8)) for i in range(3)] == ["0", "1", "1"]
    envoy = await page.text("#envoys tbody")
    assert "edge-envoy-1" in envoy
    assert "Cluster v7" in envoy
    assert "NACK v7: <b>bad</b> filter" in envoy  # as text, not as markup
    assert await page.evaluate("document.querySelector('#envoys b')") is None


async def test_looking_up_a_user_shows_the_pod_it_is_bound_to(page: Page) -> None:
    assert (await look_up(page, "alice")).startswith("alice is on pod 1 (10.0.0.1:8080, healthy)")
    assert await look_up(page, "nobody") == "nobody is not bound to any pod"


async def test_a_uid_that_looks_like_markup_is_shown_as_text_and_never_runs(page: Page) -> None:
    assert (await look_up(page, HOSTILE_UID)).startswith(f"{HOSTILE_UID} is on pod 2")
    assert await page.evaluate("window.pwned === undefined && !document.querySelector('img')")


async def test_draining_needs_the_token_then_shows_draining_and_a_timeline_entry(
    page: Page, server: TestServer
) -> None:
    await page.click("button[aria-label='Drain pod 1']")
    error = await page.wait_for("document.querySelector('#action-error').textContent")
    assert error.startswith("401 unauthorized: this operation needs 'Authorization: Bearer")
    assert "enter the admin token" in error
    assert await page.text(pod_cell(1, 3)) == "healthy"

    await use_token(page, TOKEN)
    await page.fill("#reason", "kernel upgrade")
    await page.click("button[aria-label='Drain pod 1']")
    await page.wait_for_text(pod_cell(1, 3), "draining")
    assert await page.text("#action-error") == ""
    assert await page.text("#action-ok") == "pod 1 is now draining"
    assert await page.evaluate("document.querySelector(\"[aria-label='Drain pod 1']\").disabled")
    entry = await page.wait_for(
        "document.querySelector('#failovers li[data-type=POD_DRAINED][data-pod=\"1\"]')?.innerText"
    )
    assert "POD_DRAINED" in entry
    assert "pod 1 · 1 user" in entry
    assert "reason: kernel upgrade" in entry
    assert await page.evaluate("sessionStorage.getItem('stateful-route.admin-token')") == TOKEN
    if shot := os.environ.get("DASHBOARD_SCREENSHOT"):
        await look_up(page, "alice")
        await page.screenshot(Path(shot))


async def test_a_wrong_token_and_a_refused_move_show_the_apis_errors(page: Page) -> None:
    await use_token(page, "not-the-token-at-all")
    await page.click("button[aria-label='Drain pod 0']")
    error = await page.wait_for("document.querySelector('#action-error').textContent")
    assert error == "401 unauthorized: the bearer token is not valid (check the admin token)"

    await use_token(page, TOKEN)
    await page.click("button[aria-label='Drain pod 0']")
    await page.wait_for("document.querySelector('#action-ok').textContent")
    await page.fill("#uid", "alice")
    await page.evaluate("document.querySelector('#migrate-pod').value = '0'")
    await page.click("#migrate-form button[type=submit]")
    error = await page.wait_for("document.querySelector('#action-error').textContent")
    assert error.startswith("409 pod_not_eligible:")


async def test_moving_a_user_updates_the_lookup_counts_and_timeline(page: Page) -> None:
    await use_token(page, TOKEN)
    await page.fill("#uid", "alice")
    await page.evaluate("document.querySelector('#migrate-pod').value = '0'")
    await page.click("#migrate-form button[type=submit]")
    assert (
        await page.wait_for("document.querySelector('#action-ok').textContent")
        == "alice is now on pod 0"
    )
    await page.wait_for_text(pod_cell(0, 8), "1")
    entry = await page.wait_for(
        "document.querySelector('#failovers li[data-type=USER_MIGRATED]')?.innerText"
    )
    assert "users: alice" in entry


@pytest.mark.parametrize(
    "settings", [AdminSettings(token=SecretStr(TOKEN), protect_reads=True)], ids=["protected"]
)
async def test_with_protected_reads_the_page_asks_for_the_token_before_showing_pods(
    tab: Page,
) -> None:
    live = await tab.wait_for("document.querySelector('#live.stale')?.textContent")
    assert live.startswith("not updating: 401 unauthorized:")
    assert "enter the admin token" in live
    assert await tab.evaluate("document.querySelectorAll('#pods tbody tr').length") == 0

    await use_token(tab, TOKEN)
    await tab.wait_for("document.querySelectorAll('#pods tbody tr').length === 3")
    assert (await tab.text("#live")).startswith("live · updated")


def chart(index: int) -> str:
    return f"#pod-charts svg[data-pod='{index}']"


async def test_each_pod_has_a_chart_and_the_envoys_say_whether_they_are_up_to_date(
    page: Page,
) -> None:
    await page.wait_for("document.querySelectorAll('#pod-charts svg[data-pod]').length === 3")
    assert await page.evaluate(f'document.querySelector("{chart(1)}").dataset.users') == "1"
    assert await page.evaluate(
        f"document.querySelector(\"{chart(1)} path.users\").getAttribute('d').startsWith('M')"
    )
    assert await page.evaluate("!!document.querySelector('#failover-chart line.axis')")
    rows = await page.evaluate(
        "[...document.querySelectorAll('#envoys tbody tr')]"
        ".map(r => [r.className, r.dataset.upToDate, r.cells[3].innerText])"
    )
    assert rows[0][:2] == ["nacked", "false"]
    assert rows[0][2].startswith("behind")
    assert "Listener" in rows[0][2]
    assert rows[1] == ["", "true", "up to date"]
    assert "current v7" in await page.text("#envoys tbody tr")


async def test_the_request_rate_follows_the_pods_request_counter(
    page: Page, manager: StatefulRouteManager
) -> None:
    await page.wait_for(f'document.querySelector("{chart(0)}")?.dataset.samples >= 2')
    assert await page.evaluate(f'document.querySelector("{chart(0)}").dataset.rate') == ""
    total = 0
    for _ in range(8):  # 100 requests/s, as Envoy's stats poller would report them
        total += 50
        await manager.report_load(
            ServiceKey(NAMESPACE, SERVICE), 0, LoadReport(requests_total=total)
        )
        await asyncio.sleep(0.5)
    rate = await page.wait_for(f'Number(document.querySelector("{chart(0)}").dataset.rate) || 0')
    assert 40 < rate < 200
    assert "req/s" in await page.text("#pod-charts figure[data-pod='0'] figcaption")
    assert await page.evaluate(
        f"document.querySelector(\"{chart(0)} path.rate\").getAttribute('d').length > 0"
    )


async def test_failing_a_pod_marks_it_on_the_pods_charts_and_the_failover_chart(
    page: Page, manager: StatefulRouteManager
) -> None:
    async def traffic(pods: tuple[int, ...], rounds: int) -> None:
        for _ in range(rounds):  # pod i serves 20 * (i + 1) requests/s
            for i in pods:
                served[i] += 10 * (i + 1)
                report = LoadReport(requests_total=served[i])
                await manager.report_load(ServiceKey(NAMESPACE, SERVICE), i, report)
            await asyncio.sleep(0.5)

    served = [0, 0, 0]
    await traffic((0, 1, 2), 6)
    await use_token(page, TOKEN)
    await page.evaluate("window.confirm = () => true")
    await page.click("button[aria-label='Fail pod 1']")
    await page.wait_for(f'!!document.querySelector("{chart(1)} line.m-POD_FAILURE")')
    await page.wait_for(f"document.querySelector(\"{chart(1)}\").dataset.users === '0'")
    # alice moved to another pod: that pod's chart marks the failure too.
    moved_to = await page.evaluate(
        "[...document.querySelectorAll('#pod-charts svg[data-pod]')]"
        ".filter(s => s.dataset.pod !== '1' && s.querySelector('line.m-POD_FAILURE'))"
        ".map(s => s.dataset.users)"
    )
    assert moved_to == ["1"]
    dot = "#failover-chart circle[data-type=POD_FAILURE][data-pod='1']"
    await page.wait_for(f'!!document.querySelector("{dot}")')
    await traffic((0, 2), 4)
    if shot := os.environ.get("DASHBOARD_CHARTS_SCREENSHOT"):
        await page.screenshot(Path(shot))
