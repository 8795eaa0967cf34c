"""The CLI's side of the admin API: one HTTP call, its JSON, or one line saying what failed."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from controlplane.errors import StatefulRouteError
from controlplane.tls import client_context

# An error body longer than this (a proxy's HTML page, say) is cut in the message.
_MAX_DETAIL = 200


class AdminApiError(StatefulRouteError):
    """The admin API refused a request, or could not be asked."""


class AdminClient:
    """Calls the admin API at ``base_url``, with ``token`` as bearer token when given; an
    https URL's certificate is checked against ``ca_file`` (else the system's CAs)."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout_s: float = 10.0,
        ca_file: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._tls: ssl.SSLContext | None = None
        if ca_file is not None:
            try:
                self._tls = client_context(ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise AdminApiError(f"cannot read the CA file {ca_file}: {exc}") from None

    def get(self, path: str, **query: object) -> Any:
        return self.call("GET", path, query=query)

    def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        query: dict[str, object] | None = None,
    ) -> Any:
        """The JSON answer of ``method path``; AdminApiError with one line if there is none."""
        present = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.base_url + path + (f"?{urllib.parse.urlencode(present)}" if present else "")
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        try:
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            with urllib.request.urlopen(
                request, timeout=self.timeout_s, context=self._tls
            ) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise AdminApiError(error_message(exc.code, exc.read())) from None
        except urllib.error.URLError as exc:
            raise AdminApiError(
                f"cannot reach the admin API at {self.base_url}: {_reason(exc.reason)}"
            ) from None
        except OSError as exc:  # a timeout, a connection reset
            raise AdminApiError(f"cannot reach the admin API at {self.base_url}: {exc}") from None
        except ValueError as exc:
            raise AdminApiError(f"the admin API's URL {self.base_url!r} is no URL: {exc}") from None
        try:
            return json.loads(raw or b"null")
        except ValueError:
            raise AdminApiError(
                f"{method} {url} answered something that is not JSON: {_cut(raw)}"
            ) from None


def error_message(status: int, raw: bytes) -> str:
    """One line for an error answer: the API's own message and code, else the body's start."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict) or "detail" not in body:
        return f"the admin API answered {status}: {_cut(raw) or '(no body)'}"
    detail = body["detail"]
    if isinstance(detail, list):  # schema violations: where and what
        detail = "; ".join(
            f"{'.'.join(str(part) for part in issue.get('loc', ()))}: {issue.get('msg')}"
            for issue in detail
            if isinstance(issue, dict)
        )
    message = f"{detail} ({status} {body.get('error', 'error')})"
    if status == 401:
        message += "; pass --token or set STATEFUL_ROUTE_TOKEN"
    return message


def _reason(reason: object) -> str:
    return getattr(reason, "strerror", None) or str(reason)


def _cut(raw: bytes) -> str:
    text = " ".join(raw.decode(errors="replace").split())
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."
