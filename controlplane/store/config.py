"""Settings of the Redis store: which topology, where, how to authenticate, and the key prefix.

Secrets (passwords) are ``SecretStr`` or files read when a connection is made: they never
appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

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

    # An error names the field, never the value: a value may hold a secret.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: str = "redis://127.0.0.1:6379/0"
    cluster_nodes: Addresses = Field(default_factory=list)  # seeds; the rest is discovered
    sentinels: Addresses = Field(default_factory=list)
    sentinel_master: str | None = None
    sentinel_db: int = Field(default=0, ge=0)
    # Who the control plane is to the data nodes (one server, the cluster's nodes, the
    # Sentinel-managed primary): an ACL user, or the "default" user with a password alone.
    # The password from here (e.g. STATEFUL_ROUTE_REDIS__PASSWORD) or from password_file,
    # read for every new connection (a rotated file needs no restart); never in the url.
    username: str | None = Field(default=None, min_length=1, max_length=128)
    password: SecretStr | None = None
    password_file: Path | None = None
    # The Sentinels' own credentials, when they require one.
    sentinel_username: str | None = Field(default=None, min_length=1, max_length=128)
    sentinel_password: SecretStr | None = None
    # TLS to every node (and Sentinel): a rediss:// url or tls: true. The servers' CA (None:
    # the system's), and a client certificate for servers that ask for one (tls-auth-clients).
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_check_hostname: bool = True
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
        if self.password is not None and self.password_file is not None:
            raise ValueError("choose password or password_file, not both")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if urlsplit(self.url).password is not None:
            # A url is printed and passed on command lines; the message must not repeat it.
            raise ValueError("the url carries a password: set password or password_file instead")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.url.startswith("rediss://")

    @property
    def topology(self) -> RedisTopology:
        if self.cluster_nodes:
            return RedisTopology.CLUSTER
        if self.sentinels:
            return RedisTopology.SENTINEL
        return RedisTopology.SINGLE
