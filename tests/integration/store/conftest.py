"""Every store test runs on each Redis topology: one server, a Cluster, Sentinel."""

from __future__ import annotations

import pytest

from controlplane.store import RedisClient


@pytest.fixture
def redis(any_redis: RedisClient) -> RedisClient:
    return any_redis
