"""Raw gRPC messages, for tests that send bytes to the ADS service as they are."""

from __future__ import annotations


class Raw:
    """A message that is whatever bytes it holds, both ways (grpclib's codec calls these)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data

    @staticmethod
    def FromString(data: bytes) -> bytes:
        return data
