"""The dashboard page as served (no browser): open, self-contained, locked down by its CSP."""

from __future__ import annotations

import base64
import hashlib
import re

from admin_support import Client
from aiohttp import ClientSession

from controlplane.admin.dashboard import dashboard_page


async def page_of(client: Client | ClientSession) -> tuple[str, dict[str, str]]:
    async with client.get("/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert response.charset == "utf-8"
        return await response.text(), dict(response.headers)


def sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


async def test_the_dashboard_is_served_at_the_root_without_a_token(
    anonymous: ClientSession,
) -> None:
    page, _ = await page_of(anonymous)
    assert page.startswith("<!doctype html>")
    assert "<title>stateful-route dashboard</title>" in page


async def test_the_page_loads_nothing_from_elsewhere(api: Client) -> None:
    page, _ = await page_of(api)
    assert not re.search(r"https?://|//[a-z0-9]", page, re.IGNORECASE)
    assert not re.search(r"<script[^>]*\bsrc=|<link[^>]*\bstylesheet|@import|url\(", page)


async def test_the_script_never_parses_api_data_as_markup(api: Client) -> None:
    page, _ = await page_of(api)
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


async def test_the_policy_allows_exactly_the_inline_script_and_style_and_this_origin(
    api: Client,
) -> None:
    page, headers = await page_of(api)
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == f"'sha256-{sha256(script)}'"
    assert policy["style-src"] == f"'sha256-{sha256(style)}'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert " style=" not in page  # inline style attributes would be blocked by the policy


def test_the_page_is_read_from_the_package_once() -> None:
    assert dashboard_page() is dashboard_page()
