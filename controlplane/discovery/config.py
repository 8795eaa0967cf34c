"""Settings of pod discovery: how pods' names are resolved, and the leases of pods that
register themselves."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from controlplane.discovery.resolver import AddressFamily


class DiscoverySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Which addresses a pod's name resolves to (the pod must listen on that family).
    address_family: AddressFamily = AddressFamily.IPV4
    # How often the leader resolves a serving pod's name again, and a failed one's (a pod
    # that died comes back under its name, often with a new address).
    resolve_every_s: float = Field(default=10.0, gt=0, le=86_400)
    resolve_failed_every_s: float = Field(default=1.0, gt=0, le=86_400)
    # A lookup that takes longer says nothing about the pod (it keeps its address).
    resolve_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # Pods that register themselves (POST .../leases): a lapsed lease drains the pod at once
    # and fails it (its users move) once the lease has been over this long.
    lease_drain_s: float = Field(default=10.0, ge=0, le=86_400)
    # How often the leader looks for lapsed leases.
    lease_check_every_s: float = Field(default=1.0, gt=0, le=3_600)
