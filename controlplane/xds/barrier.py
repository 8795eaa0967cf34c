"""Work that must not overtake the service changes announced before it."""

from __future__ import annotations


class ChangeBarrier:
    """Counts changes told (``tell``) and applied (``applied``). ``hold`` says whether work
    must wait for changes told before it; ``applied`` says when it may go."""

    def __init__(self) -> None:
        self.told = 0
        self._applied = 0
        self._waiting_for = 0

    def tell(self) -> int:
        """One more change is on its way; returns how many were told so far."""
        self.told += 1
        return self.told

    def hold(self) -> bool:
        """True, and remembered, while a change told so far is not applied."""
        if self._applied < self.told:
            self._waiting_for = self.told
            return True
        return False

    def applied(self, told: int) -> bool:
        """The first ``told`` changes are applied: True if held work may go now."""
        self._applied = max(self._applied, told)
        if self._waiting_for and self._applied >= self._waiting_for:
            self._waiting_for = 0
            return True
        return False
