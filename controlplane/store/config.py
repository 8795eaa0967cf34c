"""Settings of the Redis store: which topology, where, and the key prefix."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode

HostPort = Annotated[str, StringConstraints(pattern=r"^[^\s:]+:\d{1,5}$")]
# NoDecode: the environment gives "h1:7000,h2:7000", split by the validator, not JSON.
Addresses = Annotated[list[HostPort], NoDecode]


class RedisTopology(StrEnum):
    SINGLE = "single"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


class RedisSettings(BaseModel):
    """Where the bindings live: one server (``url``), a Redis Cluster (``cluster_nodes``) or a
    Sentinel-managed primary (``sentinels`` + ``sentinel_master``). Exactly one is chosen."""

    model_config = ConfigDict(extra="forbid")

    url: str = "redis://127.0.0.1:6379/0"
    cluster_nodes: Addresses = Field(default_factory=list)  # seeds; the rest is discovered
    sentinels: Addresses = Field(default_factory=list)
    sentinel_master: str | None = None
    sentinel_db: int = Field(default=0, ge=0)
    password: SecretStr | None = None  # of the data nodes (cluster, Sentinel-managed)
    prefix: str = Field(default="sr", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    history_cap: int = Field(default=100, ge=1, le=100_000)

    @field_validator("cluster_nodes", "sentinels", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # Environment variables and flags give one string: "h1:7000,h2:7000" (or JSON).
        if isinstance(value, str) and value.lstrip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _one_topology(self) -> RedisSettings:
        chosen = [
            name
            for name, on in (
                ("url", "url" in self.model_fields_set),
                ("cluster_nodes", bool(self.cluster_nodes)),
                ("sentinels", bool(self.sentinels)),
            )
            if on
        ]
        if len(chosen) > 1:
            raise ValueError(f"choose one Redis topology, not {' and '.join(chosen)}")
        if bool(self.sentinels) != (self.sentinel_master is not None):
            raise ValueError("sentinels and sentinel_master go together")
        return self

    @property
    def topology(self) -> RedisTopology:
        if self.cluster_nodes:
            return RedisTopology.CLUSTER
        if self.sentinels:
            return RedisTopology.SENTINEL
        return RedisTopology.SINGLE
