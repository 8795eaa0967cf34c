"""The one place that turns failures into HTTP error responses.

Every error leaves as ``{"error": <code>, "detail": ..., "context": {...}}``. Domain errors
carry their own status (``StatefulRouteError.http_status``), schema violations of a JSON body
are 422, a Redis outage is 503, and anything unexpected is logged and becomes a JSON 500 rather
than aiohttp's text page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from controlplane.errors import InvalidInput, StatefulRouteError, StoreUnavailable

log = logging.getLogger("stateful_route.admin")

# Status codes aiohttp itself raises (no route, wrong method, body over client_max_size).
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}

# Bearer challenge sent with every 401 (RFC 6750).
CHALLENGE = 'Bearer realm="stateful-route"'


class Unauthorized(StatefulRouteError):
    """No bearer token, or the wrong one, on a protected operation."""

    http_status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, token_sent: bool) -> None:
        super().__init__(message)
        # RFC 6750: a client that sent a token learns it was the wrong one.
        self.challenge = f'{CHALLENGE}, error="invalid_token"' if token_sent else CHALLENGE


class InvalidJson(InvalidInput):
    """The body is not JSON at all (as opposed to JSON of the wrong shape, a 422)."""

    code = "invalid_json"


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str
    detail: str | list[ValidationIssue]
    context: dict[str, Any] | None = None


def error_response(
    status: int,
    code: str,
    detail: str | list[ValidationIssue],
    *,
    context: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = ErrorBody(error=code, detail=detail, context=context or None)
    return web.Response(
        status=status,
        body=body.model_dump_json(exclude_none=True),
        content_type="application/json",
        headers=headers,
    )


def error_middleware(on_store_error: Callable[[], None]) -> Middleware:
    """Middleware mapping every failure of a handler to a JSON error response.

    ``on_store_error`` is called once per request that failed because Redis did (a metric).
    """

    @web.middleware
    async def map_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except StatefulRouteError as exc:
            if isinstance(exc, StoreUnavailable):
                on_store_error()
            return _domain_error(exc)
        except ValidationError as exc:
            return error_response(422, "validation_error", validation_issues(exc))
        except RedisError as exc:
            on_store_error()
            log.warning("store_error method=%s path=%s error=%r", request.method, request.path, exc)
            return error_response(503, StoreUnavailable.code, "the store (Redis) is unavailable")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _http_error(exc)
        except Exception:
            log.exception("admin_error method=%s path=%s", request.method, request.path)
            return error_response(500, "internal", "internal error (logged on the server)")

    return map_errors


def validation_issues(exc: ValidationError) -> list[ValidationIssue]:
    # No input values: they may be large, or hold the very CR/LF that made them invalid.
    return [
        ValidationIssue(loc=list(error["loc"]), msg=error["msg"], type=error["type"])
        for error in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def _domain_error(exc: StatefulRouteError) -> web.Response:
    headers = {"WWW-Authenticate": exc.challenge} if isinstance(exc, Unauthorized) else None
    context = {key: _plain(value) for key, value in exc.detail.items()}
    return error_response(exc.http_status, exc.code, exc.message, context=context, headers=headers)


def _http_error(exc: web.HTTPException) -> web.Response:
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    code = _HTTP_CODES.get(exc.status, "http_error")
    return error_response(exc.status, code, exc.text or exc.reason, headers=headers)


def _plain(value: object) -> object:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)
