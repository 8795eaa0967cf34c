"""The admin API's settings: one object, built once by whoever starts the server."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from controlplane.tls import ServerTlsSettings

# Shorter tokens are refused: they can be guessed. The CLI checks its --token against this too.
MIN_TOKEN_LENGTH = 16


class AdminSettings(BaseModel):
    """Who may call the admin API and how much they may send."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # With a token, every mutation needs ``Authorization: Bearer <token>``; without, none does
    # (meant for a loopback-only listener).
    token: SecretStr | None = Field(default=None, min_length=MIN_TOKEN_LENGTH)
    # Reads (state, metrics) need the token too; /healthz, /openapi.json, /docs and / never do.
    protect_reads: bool = False
    # Reads that name users (a user's binding, a pod's users, failover history with its
    # samples) need the read token or the token. None: yes when the admin API listens beyond
    # loopback (``for_listener``), no on loopback.
    protect_user_reads: bool | None = None
    # Lets its holder read (never write): for dashboards and monitoring that must not steer.
    read_token: SecretStr | None = Field(default=None, min_length=MIN_TOKEN_LENGTH)
    # None: plain HTTP (meant for loopback). With ``client_ca_file``, clients need a
    # certificate of that CA too, besides the token.
    tls: ServerTlsSettings | None = None
    # Largest request body accepted; a larger one gets 413 before any of it is parsed.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)

    def for_listener(self, host: str) -> AdminSettings:
        """These settings, with ``protect_user_reads`` decided for a listener on ``host``."""
        if self.protect_user_reads is not None:
            return self
        return self.model_copy(update={"protect_user_reads": not is_loopback(host)})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback alone."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or "" (every address): assume it is reachable from outside
