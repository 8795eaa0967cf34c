"""Which node a client certificate may speak for (xds.tls.client_identity), on getpeercert()
dicts as Python's ssl module gives them; certificate files that do not load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controlplane.errors import InvalidInput
from controlplane.tls import ReloadingServerContext, ServerTlsSettings
from controlplane.xds.config import XdsTlsSettings
from controlplane.xds.identity import PeerCheck


def cert(*sans: tuple[str, str]) -> dict[str, Any]:
    return {"subject": ((("commonName", "ignored"),),), "subjectAltName": sans}


def check(identity: str) -> PeerCheck:
    files = {name: Path(name) for name in ("cert_file", "key_file", "client_ca_file")}
    return PeerCheck(XdsTlsSettings(**files, client_identity=identity))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "san",
    [("DNS", "blue"), ("URI", "blue"), ("URI", "spiffe://mesh.example/envoy/blue")],
)
def test_a_dns_name_or_uri_naming_the_group_passes(san: tuple[str, str]) -> None:
    assert check("node_group").refusal(cert(san), node_ids={"e1"}, group="blue") is None


@pytest.mark.parametrize(
    "peercert",
    [
        cert(("DNS", "green")),
        cert(("DNS", "blue.example")),  # a longer name is another name
        cert(("URI", "spiffe://mesh.example/envoy/not-blue")),
        cert(("email", "blue")),  # only DNS names and URIs count
        {"subject": ((("commonName", "blue"),),)},  # the common name does not count
        None,
    ],
)
def test_a_certificate_not_naming_the_group_is_refused(peercert: dict[str, Any] | None) -> None:
    reason = check("node_group").refusal(peercert, node_ids={"e1"}, group="blue")
    assert reason == "the client certificate does not name node group 'blue'"


def test_an_empty_group_is_named_by_no_certificate() -> None:
    peercert = cert(("URI", "spiffe://mesh.example/"), ("DNS", ""))
    assert check("node_group").refusal(peercert, node_ids=set(), group="") is not None


def test_node_id_identity_asks_for_one_of_the_node_ids() -> None:
    by_id = check("node_id")
    assert by_id.refusal(cert(("DNS", "e2")), node_ids={"e1", "e2"}, group="blue") is None
    assert by_id.refusal(cert(("DNS", "blue")), node_ids={"e1"}, group="blue") is not None


def test_without_tls_or_with_identity_none_every_peer_passes() -> None:
    assert PeerCheck(None).refusal(None, node_ids=set(), group="blue") is None
    assert check("none").refusal(cert(("DNS", "x")), node_ids=set(), group="blue") is None


def test_tls_files_that_do_not_load_are_named_in_the_error(tmp_path: Path) -> None:
    missing = ServerTlsSettings(cert_file=tmp_path / "cert.pem", key_file=tmp_path / "key.pem")
    with pytest.raises(InvalidInput, match=r"cert\.pem"):
        ReloadingServerContext(missing)
