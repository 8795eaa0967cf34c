"""One ADS stream's protocol, without a socket: requests in, encoded responses out.

Both gRPC transports (SotW and delta) drive an ``AdsSession``; ``grpc.py`` only moves bytes.
The rules, kept here once:

- The first request of a type subscribes the stream to it; types the server does not serve
  are ignored. A request may carry the ACK or NACK of our last response of its type
  (``protocol.py`` decides which), returned to the transport to record.
- What is due goes out in push order, CDS -> EDS -> LDS -> SRDS -> RDS, each response with a
  fresh nonce ("1", "2", ...).
- Envoy keeps an updated EDS cluster warming until its endpoints arrive: after a CDS push, the
  endpoints of the pushed clusters are due again even when unchanged.
- SotW: one response per type, the whole view the client named, when its version is due.
- Delta: only differences (the subscription's journal-based ``changes``); a first response is
  due even when empty; at most ``DELTA_BATCH`` resources per response, removals in the last,
  and only the last one's ACK counts. An ACK of scopes names the scope table's version it
  acknowledges (``sent_label``), which the miss path waits for.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.xds import resources as res
from controlplane.xds import wire
from controlplane.xds.cache import Snapshot, TypeSnapshot
from controlplane.xds.protocol import (
    DeltaRequest,
    DeltaSubscription,
    Reply,
    Request,
    SotwSubscription,
)
from controlplane.xds.user_scopes import ScopeSnapshot

# Resources per delta response (Envoy applies a batch of 5,000 scopes in ~25 ms).
DELTA_BATCH = 5000
_KNOWN_TYPES = frozenset(res.PUSH_ORDER)

Current = TypeSnapshot | ScopeSnapshot
Nonce = Callable[[], str]


@dataclass(frozen=True, slots=True)
class Push:
    """The responses of one type to send now, encoded, in order."""

    type_url: str
    messages: list[bytes]


class _Flavour(Protocol):
    """What SotW and delta do differently: their subscriptions and how a response is built."""

    def subscribe(self, type_url: str) -> Any: ...

    def respond(self, sub: Any, current: Current, nonce: Nonce) -> tuple[list[bytes], list[str]]:
        """The responses due for ``sub`` (none: nothing due) and the resource names sent."""
        ...

    def resend(self, endpoints: Any, clusters: list[str]) -> None:
        """Make the endpoints of these clusters due again."""
        ...


class AdsSession:
    """What one ADS stream's client subscribed to, and what it accepted or rejected."""

    def __init__(self, flavour: _Flavour) -> None:
        self._flavour = flavour
        self._subscriptions: dict[str, Any] = {}
        self._nonces = itertools.count(1)

    @classmethod
    def sotw(cls) -> AdsSession:
        return cls(_Sotw())

    @classmethod
    def delta(cls) -> AdsSession:
        return cls(_Delta())

    def on_request(self, request: Request | DeltaRequest) -> Reply | None:
        """Apply a request; the ACK or NACK it carries, if any."""
        if request.type_url not in _KNOWN_TYPES:
            return None
        sub = self._subscriptions.get(request.type_url)
        if sub is None:
            sub = self._subscriptions[request.type_url] = self._flavour.subscribe(request.type_url)
        reply: Reply | None = sub.on_request(request)
        return reply

    def due(self, snapshot: Snapshot) -> list[Push]:
        """The responses to send now, in push order."""
        out = []
        for type_url in res.PUSH_ORDER:
            sub = self._subscriptions.get(type_url)
            if sub is None:
                continue
            messages, sent = self._flavour.respond(sub, snapshot.type(type_url), self._nonce)
            if not messages:
                continue
            endpoints = self._subscriptions.get(res.ENDPOINT)
            if type_url == res.CLUSTER and endpoints is not None:
                self._flavour.resend(endpoints, sent)
            out.append(Push(type_url, messages))
        return out

    def _nonce(self) -> str:
        return str(next(self._nonces))


class _Sotw:
    def subscribe(self, type_url: str) -> SotwSubscription:
        return SotwSubscription(type_url)

    def respond(
        self, sub: SotwSubscription, current: Current, nonce: Nonce
    ) -> tuple[list[bytes], list[str]]:
        view = current.view(sub.names)
        if not sub.due(view.version):
            return [], []
        sent_nonce = nonce()
        sub.sent(view.version, sent_nonce)
        type_url = current.type_url
        message = wire.discovery_response(
            view.version, type_url, view.sotw_resources(type_url), sent_nonce
        )
        return [message], list(sub.names)

    def resend(self, endpoints: SotwSubscription, clusters: list[str]) -> None:
        endpoints.force = True  # SotW sends the whole view anyway


class _Delta:
    def subscribe(self, type_url: str) -> DeltaSubscription:
        return DeltaSubscription(type_url)

    def respond(
        self, sub: DeltaSubscription, current: Current, nonce: Nonce
    ) -> tuple[list[bytes], list[str]]:
        updated, removed = sub.changes(current)
        if not (updated or removed or not sub.answered):
            return [], []
        label = current.version if current.type_url == res.SCOPED else ""
        # An Envoy (re)connecting gets every scope of its group: in bounded messages, so neither
        # side holds one of hundreds of megabytes.
        batches = [updated[i : i + DELTA_BATCH] for i in range(0, len(updated), DELTA_BATCH)] or [
            []
        ]
        out = []
        for number, batch in enumerate(batches, 1):
            sent_nonce = nonce()
            gone = removed if number == len(batches) else []
            versions = {name: current.versions[name] for name in batch}
            sub.sent(versions, gone, sent_nonce, label)
            items = ((name, version, current.proto(name)) for name, version in versions.items())
            out.append(wire.delta_discovery_response(current.type_url, items, gone, sent_nonce))
        return out, updated

    def resend(self, endpoints: DeltaSubscription, clusters: list[str]) -> None:
        endpoints.force(clusters)
