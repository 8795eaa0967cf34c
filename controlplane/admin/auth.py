"""Bearer-token checks: which operations need the token, and whether a request carries it."""

from __future__ import annotations

import hmac
from enum import StrEnum

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from pydantic import SecretStr

from controlplane.admin.config import AdminSettings
from controlplane.admin.errors import Unauthorized


class Access(StrEnum):
    """Who may call an operation."""

    OPEN = "open"  # anyone, always: probes and the API's own description
    READ = "read"  # anyone, unless ``protect_reads``
    WRITE = "write"  # token holders, whenever a token is configured


def needs_token(access: Access, settings: AdminSettings) -> bool:
    if settings.token is None or access is Access.OPEN:
        return False
    return access is Access.WRITE or settings.protect_reads


def guard(handler: Handler, access: Access, settings: AdminSettings) -> Handler:
    """``handler``, behind a token check if ``access`` requires one under ``settings``."""
    token = settings.token
    if token is None or not needs_token(access, settings):
        return handler

    async def guarded(request: web.Request) -> web.StreamResponse:
        check_bearer(request.headers.get(hdrs.AUTHORIZATION), token)
        return await handler(request)

    return guarded


def check_bearer(header: str | None, token: SecretStr) -> None:
    """Raise Unauthorized unless ``header`` is ``Bearer <token>``."""
    sent = _bearer(header)
    if sent is None:
        raise Unauthorized("this operation needs 'Authorization: Bearer <token>'", token_sent=False)
    # Constant time, on bytes: compare_digest refuses non-ASCII str, and a header may hold any.
    expected = token.get_secret_value().encode()
    if not hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected):
        raise Unauthorized("the bearer token is not valid", token_sent=True)


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()
