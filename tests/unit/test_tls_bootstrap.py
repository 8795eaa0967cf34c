"""envoy/ads-tls.yaml is what ``load_bootstrap(..., tls=...)`` makes of envoy/ads.yaml (what
``stateful-route demo --tls`` runs), and its secrets are the ones the miss path refers to."""

from __future__ import annotations

from pathlib import Path

from controlplane.runtime.envoy import EnvoyTls, bundled_bootstrap, load_bootstrap
from controlplane.runtime.pki import CONTROLPLANE_NAME
from controlplane.xds.naming import ENVOY_CA_SECRET, ENVOY_CERT_SECRET

FILES = Path("/etc/stateful-route/tls")


def test_the_shipped_tls_bootstrap_is_the_generated_one() -> None:
    tls = EnvoyTls(
        FILES / "envoy.pem", FILES / "envoy-key.pem", FILES / "ca.pem", CONTROLPLANE_NAME
    )
    generated = load_bootstrap(bundled_bootstrap("ads"), xds_port=18001, tls=tls)
    shipped = load_bootstrap(bundled_bootstrap("ads-tls"), xds_port=18001)
    assert generated == shipped
    names = {secret["name"] for secret in shipped["static_resources"]["secrets"]}
    assert names == {ENVOY_CERT_SECRET, ENVOY_CA_SECRET}


def test_a_rest_bootstrap_gets_tls_without_asking_for_http2() -> None:
    tls = EnvoyTls(FILES / "envoy.pem", FILES / "envoy-key.pem", FILES / "ca.pem")
    config = load_bootstrap(bundled_bootstrap("rest"), xds_port=18000, tls=tls)
    [cluster] = config["static_resources"]["clusters"]
    context = cluster["transport_socket"]["typed_config"]
    assert "alpn_protocols" not in context["common_tls_context"]
    assert "sni" not in context
