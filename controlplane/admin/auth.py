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
    USER_READ = "user_read"  # reads that name users: also behind ``protect_user_reads``
    WRITE = "write"  # token holders, whenever a token is configured


def accepted_tokens(access: Access, settings: AdminSettings) -> list[SecretStr]:
    """The tokens that open ``access`` under ``settings``; [] when it needs none."""
    if access is Access.OPEN or (settings.token is None and settings.read_token is None):
        return []
    if access is Access.WRITE:
        return [settings.token] if settings.token is not None else []
    protected = settings.protect_reads or (
        access is Access.USER_READ and bool(settings.protect_user_reads)
    )
    return [t for t in (settings.token, settings.read_token) if t is not None] if protected else []


def needs_token(access: Access, settings: AdminSettings) -> bool:
    return bool(accepted_tokens(access, settings))


def guard(handler: Handler, access: Access, settings: AdminSettings) -> Handler:
    """``handler``, behind a token check if ``access`` requires one under ``settings``."""
    tokens = accepted_tokens(access, settings)
    if not tokens:
        return handler

    async def guarded(request: web.Request) -> web.StreamResponse:
        check_bearer(request.headers.get(hdrs.AUTHORIZATION), *tokens)
        return await handler(request)

    return guarded


def check_bearer(header: str | None, *tokens: SecretStr) -> None:
    """Raise Unauthorized unless ``header`` is ``Bearer <one of tokens>``."""
    sent = _bearer(header)
    if sent is None:
        raise Unauthorized("this operation needs 'Authorization: Bearer <token>'", token_sent=False)
    # Constant time, on bytes: compare_digest refuses non-ASCII str, and a header may hold any.
    # Every token is compared, so the time does not tell which one came close.
    given = sent.encode("utf-8", "surrogatepass")
    matches = [hmac.compare_digest(given, t.get_secret_value().encode()) for t in tokens]
    if not any(matches):
        raise Unauthorized("the bearer token is not valid", token_sent=True)


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()
