"""The redis settings choose exactly one topology: one server, a Cluster, or Sentinel."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controlplane.settings import RedisSettings, RedisTopology, Settings


def test_a_single_server_is_the_default() -> None:
    assert RedisSettings().topology is RedisTopology.SINGLE


def test_cluster_seeds_may_come_as_one_comma_separated_string(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATEFUL_ROUTE_REDIS__CLUSTER_NODES", "10.0.0.1:7000, 10.0.0.2:7000")
    redis = Settings.load().redis
    assert redis.topology is RedisTopology.CLUSTER
    assert redis.cluster_nodes == ["10.0.0.1:7000", "10.0.0.2:7000"]


def test_sentinel_needs_the_master_name() -> None:
    with pytest.raises(ValidationError, match="go together"):
        RedisSettings(sentinels=["10.0.0.1:26379"])
    settings = RedisSettings(sentinels=["10.0.0.1:26379"], sentinel_master="mymaster")
    assert settings.topology is RedisTopology.SENTINEL


@pytest.mark.parametrize(
    "chosen",
    [
        {"url": "redis://10.0.0.1:6379/0", "cluster_nodes": ["10.0.0.1:7000"]},
        {"url": "redis://10.0.0.1:6379/0", "sentinels": ["a:1"], "sentinel_master": "m"},
        {"cluster_nodes": ["10.0.0.1:7000"], "sentinels": ["a:1"], "sentinel_master": "m"},
    ],
)
def test_two_topologies_at_once_are_refused(chosen: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="choose one Redis topology"):
        RedisSettings.model_validate(chosen)


def test_an_address_without_a_port_is_refused() -> None:
    with pytest.raises(ValidationError, match="cluster_nodes"):
        RedisSettings(cluster_nodes=["10.0.0.1"])
