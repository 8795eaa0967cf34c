"""What ``stateful-route demo --tls`` gives each part of the local stack from its throwaway CA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from controlplane.runtime.envoy import EnvoyTls
from controlplane.runtime.pki import CONTROLPLANE_NAME, ThrowawayCa
from controlplane.tls import client_context


class StackTls:
    """A CA in ``directory``, the control plane's certificate, and the Envoy's, which names
    its node group (``default``, checked by the control plane) and its node id."""

    def __init__(self, directory: Path, envoy_node_id: str) -> None:
        self.ca = ThrowawayCa(directory)
        self.server_cert = self.ca.issue_server()
        self.envoy_cert = self.ca.issue("envoy", "default", envoy_node_id)
        # What the stack's own clients (readiness checks, tests) trust.
        self.client = client_context(self.ca.ca_file)

    @property
    def ca_file(self) -> Path:
        return self.ca.ca_file

    def controlplane_settings(self) -> dict[str, Any]:
        """xDS and the miss path over mutual TLS, the admin API over TLS."""
        server = {
            "cert_file": str(self.server_cert.cert_file),
            "key_file": str(self.server_cert.key_file),
        }
        return {
            "xds": {"tls": {**server, "client_ca_file": str(self.ca.ca_file)}},
            "admin": {"tls": server},
        }

    def envoy(self) -> EnvoyTls:
        cert = self.envoy_cert
        return EnvoyTls(cert.cert_file, cert.key_file, self.ca.ca_file, CONTROLPLANE_NAME)


def client_session(tls: StackTls | None, **kwargs: Any) -> aiohttp.ClientSession:
    """A client session that trusts the stack's CA (with ``tls``)."""
    connector = aiohttp.TCPConnector(ssl=tls.client if tls is not None else True)
    return aiohttp.ClientSession(connector=connector, **kwargs)
