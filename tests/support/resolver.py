"""A resolver the test sets: each name answers what the test says, no DNS asked."""

from __future__ import annotations

from controlplane.domain.addresses import Resolution


class StaticResolver:
    """Names -> addresses; a name not set does not exist; ``silent`` ones get no answer."""

    def __init__(self, names: dict[str, tuple[str, ...]] | None = None) -> None:
        self.names: dict[str, tuple[str, ...]] = dict(names or {})
        self.silent: set[str] = set()
        self.asked: list[str] = []

    async def resolve(self, name: str) -> Resolution:
        self.asked.append(name)
        if name in self.silent:
            return Resolution(name, error="no answer within 5 s")
        addresses = self.names.get(name, ())
        if not addresses:
            return Resolution(name, missing=True, error="Name or service not known")
        return Resolution(name, addresses)
