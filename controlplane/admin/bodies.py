"""The HTTP edge of each handler: request bodies, path and query parameters in; JSON out.

Everything a client sends is checked here or by the domain's own validators before the manager
sees it, so bad input ends as a 400/413/422, never as a 500 or a write to Redis.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel
from pydantic_core import to_json

from controlplane.admin.errors import InvalidJson
from controlplane.admin.models import MAX_POD_INDEX
from controlplane.domain import ServiceKey, check_uid
from controlplane.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)

# ASCII digits only (int() would also take '+1', ' 1' and other scripts' digits); 18 fit int64.
_WHOLE_NUMBER = re.compile(r"[0-9]{1,18}")


async def read_body(request: web.Request, model: type[M], *, optional: bool = False) -> M:
    """The JSON body as ``model``; an absent body is ``model()`` when ``optional``.

    Raises InvalidJson (400) for text that is not JSON, ValidationError (422) for JSON of the
    wrong shape, and aiohttp's 413 for a body over the app's ``client_max_size``.
    """
    raw = await request.read()
    if not raw.strip():
        if optional:
            return model()
        raise InvalidJson("this operation needs a JSON body")
    try:
        data = json.loads(raw, parse_float=_number)
    except ValueError as exc:  # includes UnicodeDecodeError and over-long integers
        raise InvalidJson(f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidJson("the body is not JSON: nested too deeply") from None
    # Strict: JSON's own types only, so `true` is no count and "5" no number. But 1643.0 is the
    # integer 1643, as JSON Schema (and so the OpenAPI document) says: read as one.
    return model.model_validate_json(json.dumps(data), strict=True)


# Integral numbers this small are exact as floats; larger ones stay floats (no int field of the
# API comes near), so "1e999999" costs nothing.
_EXACT = 2.0**53


def _number(text: str) -> int | float:
    """A JSON number with a fraction or exponent: an int when it is a whole number."""
    value = float(text)
    return int(value) if value.is_integer() and abs(value) <= _EXACT else value


def service_key(request: web.Request) -> ServiceKey:
    return ServiceKey.of(request.match_info["namespace"], request.match_info["service"])


def pod_index(request: web.Request) -> int:
    index = whole_number("pod index", request.match_info["index"])
    if index > MAX_POD_INDEX:
        raise InvalidInput(f"pod index must be at most {MAX_POD_INDEX}", field="pod")
    return index


def uid(request: web.Request) -> str:
    return check_uid(request.match_info["uid"])


def query_int(request: web.Request, name: str, *, minimum: int, maximum: int) -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    value = whole_number(name, text)
    if not minimum <= value <= maximum:
        raise InvalidInput(f"{name} must be between {minimum} and {maximum}", field=name)
    return value


E = TypeVar("E", bound=StrEnum)


def query_choice(request: web.Request, name: str, choices: type[E]) -> E | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return choices(text)
    except ValueError:
        allowed = ", ".join(choices)
        raise InvalidInput(f"{name} must be one of {allowed}", field=name) from None


def whole_number(name: str, text: str) -> int:
    if not _WHOLE_NUMBER.fullmatch(text):
        raise InvalidInput(f"{name} must be a whole number >= 0", field=name)
    return int(text)


def json_response(value: object, *, status: int = 200) -> web.Response:
    """``value`` (pydantic models, lists and dicts of them, plain data) as a JSON response."""
    return web.Response(status=status, body=to_json(value), content_type="application/json")
