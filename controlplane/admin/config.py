"""The admin API's settings: one object, built once by whoever starts the server."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

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
    # Largest request body accepted; a larger one gets 413 before any of it is parsed.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
