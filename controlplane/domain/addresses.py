"""A pod's address from its DNS name: what an answer means for the pod (pure).

Rules:
- The index is the pod's identity; the address is only where it is now. A name that resolves
  to a new address moves the pod there, with its users and history.
- Of several addresses, the pod keeps the one it has while it is among them (no flapping
  between a name's records); else it takes the first, in the resolver's order.
- A name that does not exist (NXDOMAIN, no record of the family asked for) leaves the pod
  without an address: it is down, with the answer as the reason.
- A resolver that cannot answer (timeout, server failure) says nothing about the pod: it keeps
  its last address. Only a pod that never had one is down meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Resolution:
    """One answer for one name."""

    name: str
    addresses: tuple[str, ...] = ()  # in the resolver's order; empty: none (see ``missing``)
    missing: bool = False  # the name does not exist; else an empty answer is "could not ask"
    error: str = ""  # why there is no address

    def address_for(self, current: str | None) -> str | None:
        """The address a pod now at ``current`` should have after this answer."""
        if self.addresses:
            return current if current in self.addresses else self.addresses[0]
        return None if self.missing else current

    @property
    def down_reason(self) -> str:
        """Why a pod left without an address by this answer is down."""
        if self.missing:
            return f"name {self.name} does not resolve: {self.error}"
        return f"name {self.name} not resolved yet: {self.error}"

    @property
    def outcome(self) -> str:
        """A short word for logs: the state a watcher logs once per change of."""
        if self.addresses:
            return "resolved"
        return "missing" if self.missing else "unanswered"
