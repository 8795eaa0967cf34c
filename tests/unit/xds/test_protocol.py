"""The xDS protocol rules, without sockets: when to answer, what is an ACK or a NACK."""

from __future__ import annotations

from controlplane.xds.protocol import (
    DeltaRequest,
    DeltaSubscription,
    Node,
    Reply,
    Request,
    SotwSubscription,
    Verdict,
    admin_url,
    node_group,
)

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def request(version: str = "", nonce: str = "", error: str | None = None, names=()) -> Request:  # type: ignore[no-untyped-def]
    return Request(CDS, version, None, tuple(names), nonce, error)


def test_a_new_client_gets_the_current_version_unless_it_has_it() -> None:
    sub = SotwSubscription(CDS)
    sub.on_request(request(version=""))
    assert sub.due("v1")
    same = SotwSubscription(CDS)
    same.on_request(request(version="v1"))
    assert not same.due("v1")


def test_ack_echoes_the_nonce_and_stops_further_sends_of_that_version() -> None:
    sub = SotwSubscription(CDS)
    sub.on_request(request())
    sub.sent("v1", "1")
    assert sub.on_request(request("v1", "1")) == Reply(Verdict.ACK, "v1")
    assert not sub.due("v1")
    assert sub.due("v2")


def test_nack_is_recorded_and_the_rejected_version_is_not_sent_again() -> None:
    sub = SotwSubscription(CDS)
    sub.on_request(request())
    sub.sent("v1", "1")
    reply = sub.on_request(request("", "1", error="bad cluster"))
    assert reply == Reply(Verdict.NACK, "v1", "bad cluster")
    assert not sub.due("v1")
    assert sub.due("v2")


def test_requests_answering_an_older_nonce_are_ignored() -> None:
    sub = SotwSubscription(CDS)
    sub.on_request(request())
    sub.sent("v1", "1")
    sub.sent("v2", "2")
    assert sub.on_request(request("", "1", error="late")) is None
    assert sub.rejected_version is None


def test_changed_names_or_force_make_a_response_due_at_the_same_version() -> None:
    sub = SotwSubscription(CDS)
    sub.on_request(request("v1", names=["a"]))
    assert not sub.due("v1")
    sub.sent("v1", "1")
    sub.on_request(request("v1", "1", names=["a", "b"]))
    assert sub.due("v1")
    sub.sent("v1", "2")
    sub.force = True
    assert sub.due("v1")


def test_rest_infers_a_nack_from_the_previous_version_repeated() -> None:
    sub = SotwSubscription(CDS)
    sub.on_poll(request("v1"))
    sub.sent("v2")
    reply = sub.on_poll(request("v1"))
    assert reply is not None
    assert (reply.verdict, reply.version) == (Verdict.NACK, "v2")
    assert not sub.due("v2")  # holds instead of re-sending in a loop
    assert sub.on_poll(request("v1")) is None  # still running v1: nothing new to record
    assert sub.due("v3")


def test_rest_ack_is_the_sent_version_coming_back_once() -> None:
    sub = SotwSubscription(CDS)
    sub.on_poll(request(""))
    sub.sent("v1")
    assert sub.on_poll(request("v1")) == Reply(Verdict.ACK, "v1")
    assert sub.on_poll(request("v1")) is None


def test_rest_client_naming_an_unknown_version_has_restarted() -> None:
    sub = SotwSubscription(CDS)
    sub.on_poll(request("v1"))
    sub.sent("v2")
    sub.on_poll(request("v2"))
    assert sub.on_poll(request("")) is None  # a fresh Envoy, not a NACK
    assert sub.due("v2")


def test_rest_client_polling_afresh_before_it_acknowledged_is_answered_again_once() -> None:
    sub = SotwSubscription(CDS)
    sub.on_poll(request(""))
    sub.sent("v1")
    # An Envoy restarted before it acknowledged v1 (or one that rejected it): send v1 again.
    assert sub.on_poll(request("")) is None
    assert sub.due("v1")
    sub.sent("v1")
    # The same answer refused twice is a NACK: hold instead of sending it in a loop.
    reply = sub.on_poll(request(""))
    assert reply is not None
    assert (reply.verdict, reply.version) == (Verdict.NACK, "v1")
    assert not sub.due("v1")
    assert sub.due("v2")


class Versions:
    """Resources that say nothing of what changed: the subscription compares every name."""

    revision = 0

    def __init__(self, versions: dict[str, str]) -> None:
        self.versions = versions

    def changed_since(self, revision: int) -> set[str] | None:
        return None


class Journal(Versions):
    """Resources that tell which names changed after a revision (a group's scopes)."""

    def __init__(self, versions: dict[str, str]) -> None:
        super().__init__(versions)
        self.log: list[str] = []

    def change(self, name: str, version: str | None) -> None:
        if version is None:
            del self.versions[name]
        else:
            self.versions[name] = version
        self.log.append(name)
        self.revision = len(self.log)

    def changed_since(self, revision: int) -> set[str] | None:
        return set(self.log[revision:])


def delta(**fields) -> DeltaRequest:  # type: ignore[no-untyped-def]
    return DeltaRequest(CDS, **fields)


def test_delta_sends_only_what_the_client_lacks_and_removes_what_is_gone() -> None:
    sub = DeltaSubscription(CDS)
    sub.on_request(delta(initial_versions={"a": "1", "gone": "1"}))
    assert sub.wildcard
    assert sub.changes(Versions({"a": "1", "b": "1"})) == (["b"], ["gone"])


def test_delta_first_answer_is_due_even_when_empty() -> None:
    sub = DeltaSubscription(CDS)
    sub.on_request(delta(subscribe=("a",)))
    assert sub.changes(Versions({})) == ([], [])
    assert not sub.answered


def test_delta_nack_does_not_resend_but_the_next_version_goes_out() -> None:
    sub = DeltaSubscription(CDS)
    sub.on_request(delta())
    sub.sent({"a": "2"}, [], "1")
    reply = sub.on_request(delta(response_nonce="1", error="no"))
    assert reply is not None
    assert reply.verdict is Verdict.NACK
    assert sub.changes(Versions({"a": "2"})) == ([], [])
    assert sub.changes(Versions({"a": "3"})) == (["a"], [])


def test_delta_explicit_subscriptions_and_forced_resend() -> None:
    sub = DeltaSubscription(CDS)
    sub.on_request(delta(subscribe=("a",)))
    sub.on_request(delta(unsubscribe=("a",), subscribe=("b",)))
    assert not sub.wildcard
    assert sub.changes(Versions({"a": "1", "b": "1"})) == (["b"], [])
    sub.sent({"b": "1"}, [], "1")
    sub.force(["b"])
    assert sub.changes(Versions({"a": "1", "b": "1"})) == (["b"], [])


def test_delta_synced_to_a_journal_looks_only_at_what_changed_since() -> None:
    scopes = Journal({f"u{i}": "pod-0" for i in range(1000)})
    sub = DeltaSubscription("scopes")
    sub.on_request(delta())
    assert len(sub.changes(scopes)[0]) == 1000
    sub.sent(dict(scopes.versions), [], "1")
    scopes.change("u7", "pod-1")
    scopes.change("u8", None)
    scopes.versions["u9"] = "pod-1"  # changed behind the journal's back: not looked at
    assert sub.changes(scopes) == (["u7"], ["u8"])


def test_node_group_comes_from_cluster_id_or_metadata() -> None:
    node = Node("envoy-1", "edge", {"zone": "eu"})
    assert node_group(node, "cluster") == "edge"
    assert node_group(node, "id") == "envoy-1"
    assert node_group(node, "metadata.zone") == "eu"
    assert node_group(None, "cluster") == ""


def test_an_envoy_names_its_admin_api_in_its_node_metadata() -> None:
    def node(url: object) -> Node:
        return Node("envoy-a", "default", {"admin_url": url})

    assert admin_url(node("http://10.0.0.5:9901/"), "10.0.0.5") == "http://10.0.0.5:9901"
    # Listening on every address: reached where it connects from.
    assert admin_url(node("http://0.0.0.0:9901"), "10.0.0.7") == "http://10.0.0.7:9901"
    assert admin_url(node("http://0.0.0.0:9901"), "fd00::7") == "http://[fd00::7]:9901"
    for unusable in ["ftp://h:1", "http://h", "h:9901", 9901, None]:
        assert admin_url(node(unusable), "10.0.0.7") is None
    assert admin_url(Node("envoy-b"), "10.0.0.7") is None
    assert admin_url(None, "10.0.0.7") is None
