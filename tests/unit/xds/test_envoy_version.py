"""Which Envoys are served: the version a node reports, read on every transport, and judged."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import grpclib.const
import pytest
from envoy_data_plane.envoy.config.core.v3 import BuildVersion
from envoy_data_plane.envoy.config.core.v3 import Node as ProtoNode
from envoy_data_plane.envoy.service.discovery.v3 import DeltaDiscoveryRequest, DiscoveryRequest
from envoy_data_plane.envoy.type.v3 import SemanticVersion
from grpclib.exceptions import GRPCError

from controlplane.xds import wire
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.clients import ConnectedEnvoys, Transport
from controlplane.xds.config import XdsSettings
from controlplane.xds.envoy_version import (
    MINIMUM_ENVOY,
    EnvoyGate,
    EnvoyVersion,
    judge,
)
from controlplane.xds.grpc import AggregatedDiscovery
from controlplane.xds.protocol import Node, Request
from controlplane.xds.resources import CLUSTER
from controlplane.xds.rest import parse_request
from controlplane.xds.session import AdsSession


def envoy(version: tuple[int, int, int] | None, node_id: str = "e1") -> Node:
    return Node(node_id, "default", {}, "envoy", version)


def proto_node(major: int, minor: int, patch: int) -> ProtoNode:
    semantic = SemanticVersion(major_number=major, minor_number=minor, patch=patch)
    return ProtoNode(
        id="e1", user_agent_name="envoy", user_agent_build_version=BuildVersion(version=semantic)
    )


# -- reading the version ----------------------------------------------------------------------


def test_grpc_requests_carry_the_agent_and_its_build_version() -> None:
    sotw = wire.decode_request(bytes(DiscoveryRequest(node=proto_node(1, 36, 4))))
    delta = wire.decode_delta_request(bytes(DeltaDiscoveryRequest(node=proto_node(1, 40, 0))))
    assert sotw.node is not None
    assert delta.node is not None
    assert (sotw.node.user_agent_name, sotw.node.build_version) == ("envoy", (1, 36, 4))
    assert (delta.node.user_agent_name, delta.node.build_version) == ("envoy", (1, 40, 0))


def test_a_grpc_node_without_a_build_version_has_none() -> None:
    request = wire.decode_request(bytes(DiscoveryRequest(node=ProtoNode(id="e1"))))
    assert request.node is not None
    assert (request.node.user_agent_name, request.node.build_version) == ("", None)


def test_rest_requests_carry_the_build_version_in_either_json_spelling() -> None:
    envoy_json = {
        "node": {
            "id": "e1",
            "user_agent_name": "envoy",
            # proto3 JSON leaves a zero patch out
            "user_agent_build_version": {"version": {"major_number": 1, "minor_number": 40}},
        }
    }
    camel = {
        "node": {
            "id": "e1",
            "userAgentName": "envoy",
            "userAgentBuildVersion": {"version": {"majorNumber": 1, "minorNumber": 36, "patch": 4}},
        }
    }
    first = parse_request(json.dumps(envoy_json).encode(), CLUSTER).node
    second = parse_request(json.dumps(camel).encode(), CLUSTER).node
    assert first is not None
    assert second is not None
    assert (first.user_agent_name, first.build_version) == ("envoy", (1, 40, 0))
    assert (second.user_agent_name, second.build_version) == ("envoy", (1, 36, 4))
    bare = parse_request(b'{"node": {"id": "e1"}}', CLUSTER).node
    assert bare is not None
    assert bare.build_version is None


# -- judging it -------------------------------------------------------------------------------


def test_an_envoy_older_than_the_minimum_is_refused_naming_both_versions() -> None:
    verdict = judge(envoy((1, 35, 9)))
    assert not verdict.serve
    assert verdict.level == logging.ERROR
    assert "1.35.9" in verdict.reason
    assert str(MINIMUM_ENVOY) in verdict.reason


def test_envoys_from_the_minimum_on_are_served_silently() -> None:
    oldest = (MINIMUM_ENVOY.major, MINIMUM_ENVOY.minor, 0)
    for version in (oldest, (1, 39, 3), (1, 40, 0), (2, 0, 0)):
        verdict = judge(envoy(version))
        assert (verdict.serve, verdict.level) == (True, 0)


def test_a_node_of_unknown_version_or_kind_is_served_with_a_warning() -> None:
    for node in (
        Node("e1"),
        envoy(None),
        Node("e1", user_agent_name="grpc", build_version=(0, 1, 0)),
    ):
        verdict = judge(node)
        assert (verdict.serve, verdict.level) == (True, logging.WARNING)


def test_the_minimum_can_be_raised() -> None:
    assert not judge(envoy((1, 40, 0)), EnvoyVersion(1, 41)).serve


def test_the_gate_logs_one_line_per_node_and_version(caplog: pytest.LogCaptureFixture) -> None:
    gate = EnvoyGate()
    with caplog.at_level(logging.WARNING, logger="controlplane.xds.envoy_version"):
        for _ in range(3):  # an Envoy polling or reconnecting
            refusal = gate.admit(envoy((1, 30, 1)))
            assert refusal is not None
            assert gate.admit(envoy((1, 40, 0), "new")) is None
        assert gate.admit(Node("tool")) is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "refused" in lines[0]
    assert "version=1.30.1" in lines[0]
    assert f"minimum={MINIMUM_ENVOY}" in lines[0]
    assert "version=unknown" in lines[1]


# -- refusing on gRPC, socket-free ------------------------------------------------------------


class ScriptedStream:
    """A gRPC stream: these requests in, whatever is sent recorded."""

    def __init__(self, *requests: Request) -> None:
        self.requests = requests
        self.sent: list[object] = []

    async def __aiter__(self) -> AsyncIterator[Request]:
        for request in self.requests:
            yield request

    async def send_message(self, message: object) -> None:
        self.sent.append(message)


async def test_an_ads_stream_of_a_too_old_envoy_ends_with_failed_precondition() -> None:
    settings = XdsSettings()
    cache = SnapshotCache(settings)
    clients = ConnectedEnvoys(settings.rest_client_expiry_s)
    ads = AggregatedDiscovery(cache, clients, settings, EnvoyGate())
    stream = ScriptedStream(Request(CLUSTER, node=envoy((1, 20, 0))))
    with pytest.raises(GRPCError) as refused:
        await ads._serve(stream, Transport.ADS, AdsSession.sotw)
    assert refused.value.status is grpclib.const.Status.FAILED_PRECONDITION
    assert "1.20.0" in (refused.value.message or "")
    assert stream.sent == []
    assert clients.views() == []


def test_what_a_client_names_itself_stays_on_its_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="controlplane.xds.envoy_version"):
        EnvoyGate().admit(Node("e1\nforged", user_agent_name="x\nERROR forged"))
    [line] = [r.getMessage() for r in caplog.records]
    assert "\n" not in line
