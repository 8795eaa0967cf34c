"""The operator's dashboard: one static page at ``/`` that reads and acts through the API.

The page (``static/dashboard.html``) is self-contained: its style and script are inline and it
loads nothing from elsewhere. It is served with a Content-Security-Policy that allows exactly
those inline blocks (by SHA-256) and requests to this origin, so even a bug that let API data
into the page as markup could neither run a script nor send anything elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from aiohttp import web

PAGE = "static/dashboard.html"
_INLINE = {kind: re.compile(rf"<{kind}>(.*?)</{kind}>", re.DOTALL) for kind in ("script", "style")}
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Page:
    html: bytes
    headers: dict[str, str]


async def dashboard(request: web.Request) -> web.Response:
    page = dashboard_page()
    return web.Response(
        body=page.html, content_type="text/html", charset="utf-8", headers=page.headers
    )


@cache
def dashboard_page() -> Page:
    """The page and its security headers, read from the package once."""
    html = resources.files("controlplane.admin").joinpath(PAGE).read_text(encoding="utf-8")
    return Page(html=html.encode(), headers=security_headers(html))


def security_headers(html: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # The token lives in sessionStorage of this tab; a stale cached page is no use either.
        "Cache-Control": "no-store",
    }


def content_security_policy(html: str) -> str:
    """Allow only the page's own inline <script> and <style> blocks and fetches to this origin.

    ``frame-ancestors 'none'``: the page has buttons that fail pods; no other site may frame it
    to trick an operator into clicking them.
    """
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {_hashes('script', html)}",
            f"style-src {_hashes('style', html)}",
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _hashes(kind: str, html: str) -> str:
    blocks = _INLINE[kind].findall(_COMMENT.sub("", html))
    if not blocks:
        return "'none'"
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()}'"
        for block in blocks
    )
