"""The ADS session scripted like a playbook: requests in, encoded responses out, no socket.

Both gRPC transports drive this one session; each test feeds it requests and snapshots and
reads back the responses as Envoy would parse them.
"""

from __future__ import annotations

from envoy_data_plane.envoy.service.discovery.v3 import DeltaDiscoveryResponse, DiscoveryResponse

from controlplane.xds import resources as res
from controlplane.xds.cache import Snapshot, SnapshotKey, TypeSnapshot
from controlplane.xds.protocol import DeltaRequest, Reply, Request, Verdict
from controlplane.xds.render import Rendered
from controlplane.xds.session import DELTA_BATCH, AdsSession, Push

CDS, EDS, LDS, SRDS, RDS = res.CLUSTER, res.ENDPOINT, res.LISTENER, res.SCOPED, res.ROUTE
KEY = SnapshotKey("edge", res.SourceKind.ADS)


def of_type(type_url: str, version: str, **resources: str) -> TypeSnapshot:
    """A snapshot type whose resources are name -> version (the body is the version)."""
    rendered = {
        name: Rendered(name, v.encode(), lambda: "{}", version=v) for name, v in resources.items()
    }
    return TypeSnapshot(type_url, version, rendered)


def snapshot(**versions: TypeSnapshot) -> Snapshot:
    types = {t: of_type(t, "0") for t in res.PUSH_ORDER}
    names = {"cds": CDS, "eds": EDS, "lds": LDS, "srds": SRDS, "rds": RDS}
    types.update({names[short]: typ for short, typ in versions.items()})
    return Snapshot(KEY, types)


def sotw(session: AdsSession, snap: Snapshot) -> list[DiscoveryResponse]:
    return [DiscoveryResponse.parse(m) for push in session.due(snap) for m in push.messages]


def delta(session: AdsSession, snap: Snapshot) -> list[DeltaDiscoveryResponse]:
    return [DeltaDiscoveryResponse.parse(m) for push in session.due(snap) for m in push.messages]


def test_sotw_answers_every_subscribed_type_in_push_order_with_fresh_nonces() -> None:
    session = AdsSession.sotw()
    for type_url in (RDS, LDS, SRDS, EDS, CDS):  # subscribed in any order
        assert session.on_request(Request(type_url)) is None
    sent = sotw(session, snapshot(cds=of_type(CDS, "c1", a="1")))
    assert [(r.type_url, r.nonce) for r in sent] == [
        (CDS, "1"),
        (EDS, "2"),
        (LDS, "3"),
        (RDS, "4"),  # a route Envoy holds changes before scopes re-point users at it
        (SRDS, "5"),
    ]
    assert sent[0].version_info == "c1"
    assert sotw(session, snapshot(cds=of_type(CDS, "c1", a="1"))) == []  # nothing new


def test_sotw_ack_and_nack_are_returned_and_a_rejected_version_is_not_resent() -> None:
    session = AdsSession.sotw()
    session.on_request(Request(CDS))
    sotw(session, snapshot(cds=of_type(CDS, "c1", a="1")))
    assert session.on_request(Request(CDS, "c1", response_nonce="1")) == Reply(Verdict.ACK, "c1")
    [second] = sotw(session, snapshot(cds=of_type(CDS, "c2", a="2")))
    nack = session.on_request(Request(CDS, "c1", response_nonce=second.nonce, error="bad"))
    assert nack == Reply(Verdict.NACK, "c2", "bad")
    assert sotw(session, snapshot(cds=of_type(CDS, "c2", a="2"))) == []


def test_sotw_endpoints_follow_every_cluster_push_even_when_unchanged() -> None:
    session = AdsSession.sotw()
    session.on_request(Request(CDS))
    session.on_request(Request(EDS))
    sotw(session, snapshot())
    sent = sotw(session, snapshot(cds=of_type(CDS, "c2", a="2")))
    assert [(r.type_url, r.version_info) for r in sent] == [(CDS, "c2"), (EDS, "0")]


def test_types_the_server_does_not_serve_are_ignored() -> None:
    session = AdsSession.sotw()
    assert session.on_request(Request("type.googleapis.com/unknown", response_nonce="1")) is None
    assert session.due(snapshot()) == []


def test_delta_sends_a_first_response_even_when_empty_then_only_differences() -> None:
    session = AdsSession.delta()
    session.on_request(DeltaRequest(LDS))
    [first] = delta(session, snapshot())
    assert (first.type_url, first.resources, first.nonce) == (LDS, [], "1")
    assert delta(session, snapshot()) == []
    [change] = delta(session, snapshot(lds=of_type(LDS, "l2", http="1", tcp="1")))
    assert [(r.name, r.version) for r in change.resources] == [("http", "1"), ("tcp", "1")]
    [removal] = delta(session, snapshot(lds=of_type(LDS, "l3", http="1")))
    assert (removal.resources, removal.removed_resources) == ([], ["tcp"])


def test_delta_resends_the_endpoints_of_the_clusters_it_pushed_only() -> None:
    session = AdsSession.delta()
    session.on_request(DeltaRequest(CDS))
    session.on_request(DeltaRequest(EDS))
    endpoints = of_type(EDS, "e1", a="1", b="1")
    delta(session, snapshot(cds=of_type(CDS, "c1", a="1", b="1"), eds=endpoints))
    sent = delta(session, snapshot(cds=of_type(CDS, "c2", a="2", b="1"), eds=endpoints))
    assert [(r.type_url, [x.name for x in r.resources]) for r in sent] == [
        (CDS, ["a"]),
        (EDS, ["a"]),
    ]


def test_delta_sends_a_large_change_in_batches_and_removes_in_the_last() -> None:
    session = AdsSession.delta()
    session.on_request(DeltaRequest(RDS, initial_versions={"old": "1"}))
    many = {f"r{i:05}": "1" for i in range(2 * DELTA_BATCH + 1)}
    pushes = session.due(snapshot(rds=of_type(RDS, "r1", **many)))
    assert [(p.type_url, len(p.messages)) for p in pushes] == [(RDS, 3)]
    sent = [DeltaDiscoveryResponse.parse(m) for m in pushes[0].messages]
    assert [len(r.resources) for r in sent] == [DELTA_BATCH, DELTA_BATCH, 1]
    assert [r.removed_resources for r in sent] == [[], [], ["old"]]
    # Only the last response's ACK counts.
    assert session.on_request(DeltaRequest(RDS, response_nonce=sent[0].nonce)) is None
    ack = session.on_request(DeltaRequest(RDS, response_nonce=sent[-1].nonce))
    assert ack is not None
    assert ack.verdict is Verdict.ACK


def test_delta_ack_of_scopes_names_the_scope_table_version_it_acknowledges() -> None:
    session = AdsSession.delta()
    session.on_request(DeltaRequest(SRDS))
    [sent] = delta(session, snapshot(srds=of_type(SRDS, "scopes-7", alice="1")))
    ack = session.on_request(DeltaRequest(SRDS, response_nonce=sent.nonce))
    assert ack == Reply(Verdict.ACK, "scopes-7")
    nack = session.on_request(DeltaRequest(SRDS, response_nonce=sent.nonce, error="bad scope"))
    assert nack == Reply(Verdict.NACK, "scopes-7", "bad scope")


def test_pushes_name_their_type_and_count_their_responses() -> None:
    session = AdsSession.delta()
    session.on_request(DeltaRequest(CDS))
    [push] = session.due(snapshot())
    assert push == Push(CDS, push.messages)
    assert len(push.messages) == 1
