"""TLS for the control plane's listeners: certificate files named in the settings, a server
context built from them, reloaded in place when the files change (no restart for a rotation).

Python's ``SSLContext`` is read at each handshake: loading a new chain into the live context
serves it to the next connection, while open ones keep theirs. A CA file that changes adds its
certificates to the trusted ones; trust in a removed CA ends only with a restart.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from controlplane.errors import InvalidInput

log = logging.getLogger("stateful_route.tls")


class ServerTlsSettings(BaseModel):
    """A listener's certificate and key, and the CA its clients' certificates must chain to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: Path
    key_file: Path
    # Clients must present a certificate issued by this CA; None: no client certificates.
    client_ca_file: Path | None = None
    # How often the files are looked at for a change.
    reload_every_s: float = Field(default=5.0, gt=0)

    def files(self) -> tuple[Path, ...]:
        return (self.cert_file, self.key_file, *filter(None, [self.client_ca_file]))


class ReloadingServerContext:
    """A server ``SSLContext`` over ``settings``' files, reloaded when one of them changes."""

    def __init__(self, settings: ServerTlsSettings, *, alpn: Iterable[str] = ()) -> None:
        self.settings = settings
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        if alpn:
            self.context.set_alpn_protocols(list(alpn))
        if settings.client_ca_file is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
        self._stamp = self._stamps()
        try:
            self._load(self.context)
        except (OSError, ssl.SSLError) as exc:  # Python names no file: say which
            files = ", ".join(str(path) for path in settings.files())
            raise InvalidInput(f"TLS files {files} do not load: {exc}") from None

    def reload_if_changed(self) -> bool:
        """Load the files again if any changed since the last load; whether it did. Files that
        do not load (a rotation half written) leave the context as it was, and are tried again."""
        stamp = self._stamps()
        if stamp == self._stamp:
            return False
        try:
            self._load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))  # all of it loads, or none
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("tls_reload_failed cert=%s error=%s", self.settings.cert_file, exc)
            return False
        self._load(self.context)
        self._stamp = stamp
        log.info("tls_reloaded cert=%s", self.settings.cert_file)
        return True

    async def watch(self) -> None:
        """Reload whenever the files change, until cancelled."""
        while True:
            await asyncio.sleep(self.settings.reload_every_s)
            self.reload_if_changed()

    def _stamps(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self.settings.files():
            try:
                stat = path.stat()
            except OSError:
                stamps.append((0, 0, 0))  # missing for now: a change when it is back
            else:
                stamps.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
        return tuple(stamps)

    def _load(self, context: ssl.SSLContext) -> None:
        context.load_cert_chain(self.settings.cert_file, self.settings.key_file)
        if self.settings.client_ca_file is not None:
            context.load_verify_locations(cafile=self.settings.client_ca_file)


def client_context(ca_file: str | Path | None) -> ssl.SSLContext:
    """A client context trusting ``ca_file`` (the system's CAs when None)."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def peer_names(peercert: dict[str, Any] | None) -> frozenset[str]:
    """The DNS names and URIs a verified peer certificate (``getpeercert()``) names."""
    if not peercert:
        return frozenset()
    return frozenset(
        value for kind, value in peercert.get("subjectAltName", ()) if kind in ("DNS", "URI")
    )


def names_identity(names: frozenset[str], identity: str) -> bool:
    """Whether a certificate with these SANs speaks for ``identity``: a DNS name equal to it,
    or a URI equal to it or ending in ``/<identity>`` (a SPIFFE ID's last segment)."""
    if not identity:
        return False
    return any(name == identity or name.endswith(f"/{identity}") for name in names)
