"""Pods given by DNS name: the names allowed, the index a name carries, what an answer means
for a pod's address (domain/addresses.py), and the pod body that says all this."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controlplane.admin.models import PodSpec
from controlplane.balancer import Candidate
from controlplane.domain import Pod, PodHealth, PodState
from controlplane.domain.addresses import Resolution
from controlplane.domain.names import check_host_name, ordinal_of
from controlplane.errors import InvalidInput


@pytest.mark.parametrize(
    ("name", "ordinal"),
    [
        ("pod-0", 0),
        ("echo-2.echo", 2),
        ("echo-12.echo.stateful-route.svc.cluster.local.", 12),
        ("web-a-3", 3),
        ("web", None),
        ("web-a.pod-3", None),  # the ordinal is the first label's
        ("web-1234567890", None),  # too long to be an index
    ],
)
def test_a_name_carries_the_ordinal_that_ends_its_first_label(
    name: str, ordinal: int | None
) -> None:
    assert ordinal_of(name) == ordinal


@pytest.mark.parametrize("name", ["pod-0", "my_pod", "echo-0.echo.ns.svc", "localhost", "a."])
def test_dns_names_and_compose_names_are_pod_names(name: str) -> None:
    assert check_host_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "bad name", "-pod", "pod-", "a..b", "pod/0", "x" * 64, "a." * 127 + "a"]
)
def test_other_text_is_no_pod_name(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_host_name(name)


def test_a_pod_keeps_its_address_while_the_name_still_has_it() -> None:
    answer = Resolution("pod-0", ("10.0.0.7", "10.0.0.5"))
    assert answer.address_for("10.0.0.5") == "10.0.0.5"
    assert answer.address_for("10.0.0.9") == "10.0.0.7"
    assert answer.address_for(None) == "10.0.0.7"


def test_a_missing_name_leaves_the_pod_without_an_address_and_says_why() -> None:
    answer = Resolution("pod-0", missing=True, error="Name or service not known")
    assert answer.address_for("10.0.0.5") is None
    assert answer.down_reason == "name pod-0 does not resolve: Name or service not known"
    assert answer.outcome == "missing"


def test_a_resolver_that_does_not_answer_says_nothing_about_the_pod() -> None:
    answer = Resolution("pod-0", error="no answer within 5 s")
    assert answer.address_for("10.0.0.5") == "10.0.0.5"
    assert answer.address_for(None) is None
    assert answer.outcome == "unanswered"


def test_a_new_address_forgets_envoys_ejection_of_the_old_one() -> None:
    pod = Pod(index=0, host="10.0.0.5", name="pod-0", port=80)
    pod = pod.model_copy(update={"health": PodHealth(state=PodState.EJECTED, ejected_at=100.0)})
    assert pod.at_host("10.0.0.5") is pod
    moved = pod.at_host("10.0.0.9")
    assert (moved.host, moved.index, moved.state) == ("10.0.0.9", 0, PodState.EJECTED)
    assert moved.health.ejected_at is None


def test_a_pod_without_an_address_takes_and_keeps_no_users() -> None:
    pod = Pod(index=3, name="pod-3", port=80)
    assert pod.address is None
    assert not pod.accepts_new_users
    assert not pod.keeps_bound_users
    assert not Candidate.of(pod).eligible


def test_a_pod_needs_a_host_or_a_name() -> None:
    with pytest.raises(ValidationError, match=r"a host .* or a name"):
        Pod(index=0, port=80)


def spec(**body: object) -> PodSpec:
    return PodSpec.model_validate(body, strict=True)


def test_a_pod_body_by_name_takes_its_index_from_the_ordinal_unless_given() -> None:
    assert spec(name="echo-2.echo", port=8080).to_pod().index == 2
    assert spec(name="echo-2.echo", index=7, port=8080).to_pod().index == 7
    pod = spec(name="worker", index=1, port=8080).to_pod()
    assert (pod.index, pod.name, pod.host) == (1, "worker", None)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"port": 80}, "either a host .* or a name"),
        ({"index": 0, "host": "10.0.0.1", "name": "pod-0", "port": 80}, "either a host"),
        ({"name": "worker", "port": 80}, "give the pod an index, or a name ending"),
        ({"host": "10.0.0.1", "port": 80}, "give the pod an index"),
        ({"name": "pod-0", "index": None, "port": 80}, "leave the field out rather than null"),
        ({"name": "pod 0", "index": 0, "port": 80}, "name must be a DNS name"),
    ],
)
def test_a_pod_body_that_cannot_say_where_or_which_pod_is_refused_saying_why(
    body: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        spec(**body)


def test_the_pod_bodys_json_schema_says_the_same() -> None:
    schema = PodSpec.model_json_schema()
    assert schema["oneOf"] == [{"required": ["host"]}, {"required": ["name"]}]
    assert {"required": ["index"]} in schema["anyOf"]
    for field in ("index", "host", "name"):
        assert "anyOf" not in schema["properties"][field]  # never null
    assert schema["properties"]["name"]["maxLength"] == 253
