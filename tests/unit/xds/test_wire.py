"""The hand-written envelopes agree with betterproto2's reading and writing of them."""

from __future__ import annotations

import pytest
from envoy_data_plane.envoy.config.cluster.v3 import Cluster
from envoy_data_plane.envoy.config.core.v3 import Address, SocketAddress
from envoy_data_plane.envoy.config.core.v3 import Node as ProtoNode
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterStats,
    UpstreamEndpointStats,
    UpstreamLocalityStats,
)
from envoy_data_plane.envoy.service.discovery.v3 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)
from envoy_data_plane.envoy.service.load_stats.v3 import LoadStatsRequest
from envoy_data_plane.google.protobuf import Struct, Value
from envoy_data_plane.google.rpc import Status

from controlplane.domain.fleet_evidence import EndpointLoad
from controlplane.xds import wire
from controlplane.xds.resources import CLUSTER


def test_discovery_response_parses_back_with_its_resources() -> None:
    cluster = Cluster(name="games/lobby")
    data = wire.discovery_response(
        "v1", CLUSTER, wire.sotw_resources(CLUSTER, [bytes(cluster)]), "7"
    )
    parsed = DiscoveryResponse.parse(data)
    assert (parsed.version_info, parsed.type_url, parsed.nonce) == ("v1", CLUSTER, "7")
    assert parsed.resources[0].unpack() == cluster


def test_delta_response_carries_names_versions_and_removals() -> None:
    cluster = Cluster(name="a")
    data = wire.delta_discovery_response(CLUSTER, [("a", "v1", bytes(cluster))], ["gone"], "3")
    parsed = DeltaDiscoveryResponse.parse(data)
    assert [(r.name, r.version) for r in parsed.resources] == [("a", "v1")]
    assert parsed.resources[0].resource.unpack() == cluster  # type: ignore[union-attr]
    assert (parsed.removed_resources, parsed.nonce) == (["gone"], "3")


def test_request_decoding_reads_node_names_nonce_and_error() -> None:
    message = DiscoveryRequest(
        version_info="v1",
        node=ProtoNode(
            id="e1", cluster="edge", metadata=Struct(fields={"zone": Value(string_value="eu")})
        ),
        resource_names=["a", "b"],
        type_url=CLUSTER,
        response_nonce="4",
        error_detail=Status(code=3, message="bad"),
    )
    decoded = wire.decode_request(bytes(message))
    assert decoded.version_info == "v1"
    assert decoded.node is not None
    assert (decoded.node.id, decoded.node.cluster, decoded.node.metadata) == (
        "e1", "edge", {"zone": "eu"},
    )  # fmt: skip
    assert (decoded.resource_names, decoded.response_nonce, decoded.error) == (
        ("a", "b"),
        "4",
        "bad",
    )


def test_an_ack_has_no_error() -> None:
    assert wire.decode_request(bytes(DiscoveryRequest(response_nonce="1"))).error is None


def test_delta_request_decoding_reads_subscriptions_and_initial_versions() -> None:
    message = DeltaDiscoveryRequest(
        type_url=CLUSTER,
        resource_names_subscribe=["a"],
        resource_names_unsubscribe=["b"],
        initial_resource_versions={"a": "1"},
        response_nonce="2",
    )
    decoded = wire.decode_delta_request(bytes(message))
    assert (decoded.subscribe, decoded.unsubscribe) == (("a",), ("b",))
    assert decoded.initial_versions == {"a": "1"}
    assert (decoded.response_nonce, decoded.error) == ("2", None)


def test_truncated_bytes_are_rejected() -> None:
    data = bytes(DiscoveryRequest(version_info="v1", type_url=CLUSTER))
    with pytest.raises(wire.WireError):
        wire.decode_request(data[:-3])


def test_load_report_decoding_reads_the_node_and_every_endpoints_counts() -> None:
    def endpoint(ip: str, ok: int, errors: int, in_flight: int) -> UpstreamEndpointStats:
        socket = SocketAddress(address=ip, port_value=8080)
        return UpstreamEndpointStats(
            address=Address(socket_address=socket),
            total_successful_requests=ok,
            total_error_requests=errors,
            total_requests_in_progress=in_flight,
            total_issued_requests=ok + errors + in_flight,
        )

    locality = UpstreamLocalityStats(
        upstream_endpoint_stats=[endpoint("10.0.0.1", 7, 0, 2), endpoint("10.0.0.2", 0, 3, 0)]
    )
    request = LoadStatsRequest(
        node=ProtoNode(id="envoy-a", cluster="default"),
        cluster_stats=[ClusterStats(cluster_name="demo/echo", upstream_locality_stats=[locality])],
    )
    node, loads = wire.decode_load_stats_request(bytes(request))
    assert node is not None
    assert node.id == "envoy-a"
    assert loads == [
        EndpointLoad("demo/echo", "10.0.0.1:8080", successes=7, errors=0, in_flight=2),
        EndpointLoad("demo/echo", "10.0.0.2:8080", successes=0, errors=3, in_flight=0),
    ]


def test_a_malformed_load_report_is_a_wire_error() -> None:
    with pytest.raises(wire.WireError):
        wire.decode_load_stats_request(b"\x12\x05ab")
