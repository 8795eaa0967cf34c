"""Whether the Envoy at the other end of a TLS connection may ask as the node it claims.

With ``xds.tls`` the handshake already proved the peer holds a certificate of the configured
CA; this adds the check that the certificate names the node group (or node id) the request
claims, so one Envoy cannot read, or place users for, another group. It runs at the first
request of a gRPC stream, on every REST request and on every miss-path call. A refusal is
logged once per certificate and claim: a refused Envoy retrying every second logs nothing more.
"""

from __future__ import annotations

import logging
from typing import Any

from controlplane.tls import names_identity, peer_names
from controlplane.xds.config import XdsTlsSettings

log = logging.getLogger("stateful_route.xds.identity")

# Refusals remembered for logging once; past this many the memory starts over.
_MAX_LOGGED = 1024


class PeerCheck:
    """The certificate check ``xds.tls.client_identity`` asks for; passes all without TLS."""

    def __init__(self, tls: XdsTlsSettings | None) -> None:
        self._identity = tls.client_identity if tls is not None else "none"
        self._logged: set[tuple[frozenset[str], str]] = set()

    def refusal(
        self, peercert: dict[str, Any] | None, *, node_ids: set[str], group: str
    ) -> str | None:
        """None if a peer with ``peercert`` may ask for ``group`` as one of ``node_ids`` (the
        node id it sent; on the miss path, the ids of the group's connected Envoys), else why
        not, in words the peer may read."""
        if self._identity == "none":
            return None
        names = peer_names(peercert)
        if self._identity == "node_group":
            if names_identity(names, group):
                return None
            reason = f"the client certificate does not name node group {group!r}"
        else:
            if any(names_identity(names, node_id) for node_id in node_ids):
                return None
            reason = f"the client certificate does not name a node id of group {group!r}"
        self._log_once(names, reason)
        return reason

    def _log_once(self, names: frozenset[str], reason: str) -> None:
        key = (names, reason)
        if key in self._logged:
            return
        if len(self._logged) >= _MAX_LOGGED:
            self._logged.clear()
        self._logged.add(key)
        log.warning("xds_peer_refused names=%s reason=%r", sorted(names), reason)
