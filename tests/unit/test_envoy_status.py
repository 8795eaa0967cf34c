"""Whether an Envoy runs what is served now: its ACKs against the snapshot's versions."""

from __future__ import annotations

from controlplane.admin.envoy_status import envoy_status
from controlplane.xds.clients import EnvoyView, Transport, TypeStatusView

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


def view(**types: TypeStatusView) -> EnvoyView:
    urls = {"cluster": CLUSTER, "listener": LISTENER, "route": ROUTE}
    return EnvoyView(
        node_id="edge-1",
        node_group="edge",
        transport=Transport.ADS,
        connected_since=1.0,
        last_seen=2.0,
        types={urls[name]: status for name, status in types.items()},
    )


def test_an_envoy_whose_acks_are_the_served_versions_is_up_to_date() -> None:
    status = envoy_status(
        view(cluster=TypeStatusView(acked_version="c2"), route=TypeStatusView(acked_version="r1")),
        {CLUSTER: ("c2",), ROUTE: ("all-routes", "r1")},  # one route, asked for by name
    )
    assert status.up_to_date is True
    assert status.types[CLUSTER].current_version == "c2"
    assert status.types[ROUTE].up_to_date is True


def test_an_older_ack_or_none_is_behind_and_a_nack_stays_visible() -> None:
    nacked = TypeStatusView(acked_version="l1", nacked_version="l2", nack_message="bad filter")
    status = envoy_status(
        view(cluster=TypeStatusView(), listener=nacked), {CLUSTER: ("c2",), LISTENER: ("l2",)}
    )
    assert status.up_to_date is False
    assert status.types[CLUSTER].up_to_date is False  # nothing ACKed yet
    listener = status.types[LISTENER]
    assert (listener.up_to_date, listener.current_version) == (False, "l2")
    assert (listener.nacked_version, listener.nack_message) == ("l2", "bad filter")


def test_types_without_a_comparable_version_are_not_known() -> None:
    status = envoy_status(view(cluster=TypeStatusView(acked_version="digest")), {})
    assert status.types[CLUSTER].up_to_date is None
    assert status.up_to_date is None
