"""Asking DNS for a pod's addresses, off the event loop.

``SystemResolver`` uses the system's resolver (``getaddrinfo``: /etc/hosts, DNS, whatever the
host is set up with) through asyncio, which runs it in a worker thread. At most ``concurrency``
lookups run at once, so a slow DNS server cannot take every worker thread of the loop; a lookup
that outlasts ``timeout_s`` is answered "could not ask" (its thread finishes on its own).
"""

from __future__ import annotations

import asyncio
import socket
from enum import StrEnum
from typing import Any, Protocol

from controlplane.domain.addresses import Resolution

# getaddrinfo's answers that mean "no such name", not "could not ask".
_MISSING = {
    getattr(socket, name)
    for name in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY")
    if hasattr(socket, name)
}


class AddressFamily(StrEnum):
    """Which addresses a pod's name is resolved to."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"
    ANY = "any"  # both, in the order the system's resolver prefers


_FAMILIES = {
    AddressFamily.IPV4: socket.AF_INET,
    AddressFamily.IPV6: socket.AF_INET6,
    AddressFamily.ANY: socket.AF_UNSPEC,
}


class Resolver(Protocol):
    async def resolve(self, name: str) -> Resolution:
        """The addresses ``name`` has now; never raises for a failed lookup."""
        ...


class SystemResolver:
    """``getaddrinfo`` in the loop's worker threads, bounded in time and concurrency."""

    def __init__(
        self,
        family: AddressFamily = AddressFamily.IPV4,
        *,
        timeout_s: float = 5.0,
        concurrency: int = 4,
    ) -> None:
        self._family = _FAMILIES[family]
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(concurrency)

    async def resolve(self, name: str) -> Resolution:
        await self._slots.acquire()
        lookup = asyncio.ensure_future(
            asyncio.get_running_loop().getaddrinfo(
                name, None, family=self._family, type=socket.SOCK_STREAM
            )
        )
        # The slot is held until the thread is done, even past our timeout.
        lookup.add_done_callback(lambda _: self._slots.release())
        try:
            async with asyncio.timeout(self._timeout_s):  # wait_for can swallow a cancel
                infos = await asyncio.shield(lookup)
        except TimeoutError:
            lookup.add_done_callback(_consume)
            return Resolution(name, error=f"no answer within {self._timeout_s:g} s")
        except socket.gaierror as exc:
            return Resolution(name, missing=exc.errno in _MISSING, error=str(exc.strerror))
        except (OSError, UnicodeError) as exc:
            return Resolution(name, error=str(exc))
        addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
        return Resolution(name, addresses)


def _consume(lookup: asyncio.Future[Any]) -> None:
    # A lookup given up on may still fail: its exception is expected, not "never retrieved".
    if not lookup.cancelled():
        lookup.exception()
