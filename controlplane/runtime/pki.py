"""A throwaway certificate authority for ``stateful-route demo --tls`` and the tests: a CA and
the certificates it issues, written as PEM files to a directory (the ``trustme`` package)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The DNS name the control plane's certificate carries and its clients check.
CONTROLPLANE_NAME = "stateful-route-controlplane"


@dataclass(frozen=True, slots=True)
class CertFiles:
    cert_file: Path
    key_file: Path


class ThrowawayCa:
    """A new CA whose certificate is ``ca_file``; every file lives under ``directory``."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        try:
            import trustme
        except ImportError:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "TLS for the demo needs the trustme package: pip install 'stateful-route[servers]'"
            ) from None
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA(organization_name=f"stateful-route {name}")
        self.ca_file = directory / f"{name}.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        self.name = name

    def issue(self, name: str, *identities: str) -> CertFiles:
        """A certificate for these identities (DNS names or IP addresses), as ``<name>.pem``
        (the chain) and ``<name>-key.pem``; written again in place when issued again."""
        cert = self._ca.issue_cert(*identities)
        files = CertFiles(self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")
        # The key first: a reader that sees the new chain must find its key.
        _write(files.key_file, cert.private_key_pem.bytes())
        _write(files.cert_file, b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        return files

    def issue_server(self, name: str = "controlplane") -> CertFiles:
        """The control plane's certificate: its DNS name and the loopback addresses."""
        return self.issue(name, CONTROLPLANE_NAME, "localhost", "127.0.0.1", "::1")


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` at once (a rename), so no reader sees half a file; owner-only."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.chmod(0o600)
    partial.replace(path)
