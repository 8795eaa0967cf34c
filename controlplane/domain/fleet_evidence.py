"""What the fleet's Envoys see of each endpoint, from their load reports (LRS), pure.

Rules:
- Each Envoy reports, every interval, per endpoint: requests completed, errors (5xx, upstream
  connect failures and resets) and requests in flight. Only its latest interval counts; an
  endpoint it did not report had no requests from it (it has no opinion).
- An Envoy *sees an endpoint failing* when at least ``error_ratio`` of the requests it
  completed there failed; it *sees it serving* when fewer did.
- An endpoint is *failing* when more Envoys see it failing than serving, and those together
  saw at least ``min_errors`` errors. One Envoy alone that fails where the others succeed has
  a problem of its own (its network, its outlier detection handles it); a pod that every Envoy
  it talks to fails on is gone. The verdict is reported once, when the endpoint starts failing.
- The load of an endpoint is its requests in flight, summed over every Envoy's latest report.
- An Envoy that stops reporting (its stream ended) is forgotten: its opinions and its load.

Every report costs O(endpoints it names, plus those of its previous report).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

Endpoint = tuple[str, str]  # (Envoy cluster name, "ip:port")


@dataclass(frozen=True, slots=True)
class EndpointLoad:
    """One endpoint in one Envoy's load report (one interval)."""

    cluster: str
    address: str  # "ip:port"
    successes: int = 0
    errors: int = 0
    in_flight: int = 0

    @property
    def endpoint(self) -> Endpoint:
        return self.cluster, self.address


@dataclass(frozen=True, slots=True)
class EvidenceRules:
    # An Envoy sees an endpoint failing when at least this share of its requests there failed.
    error_ratio: float = 0.5
    # ... and the Envoys that see it failing saw at least this many errors together.
    min_errors: int = 2


@dataclass(frozen=True, slots=True)
class FailingEndpoint:
    """An endpoint the fleet's load reports say is failing, with the evidence."""

    cluster: str
    address: str
    failing_envoys: int
    serving_envoys: int
    errors: int

    @property
    def reason(self) -> str:
        envoys = self.failing_envoys + self.serving_envoys
        return (
            f"envoy load reports: {self.errors} errors, failing for "
            f"{self.failing_envoys} of {envoys} envoys"
        )


class _Opinion(Enum):
    FAILING = "failing"
    SERVING = "serving"


@dataclass(slots=True)
class _Tally:
    failing: int = 0
    serving: int = 0
    errors: int = 0  # the failing Envoys' errors
    in_flight: int = 0
    failed: bool = False  # reported as failing, not serving again since

    def is_failing(self, rules: EvidenceRules) -> bool:
        return self.failing > self.serving and self.errors >= rules.min_errors


@dataclass(slots=True)
class _Seen:
    """One Envoy's contribution to one endpoint's tally."""

    opinion: _Opinion | None
    errors: int
    in_flight: int


@dataclass(slots=True)
class FleetEvidence:
    """Folds the Envoys' load reports into per-endpoint opinions and load."""

    rules: EvidenceRules = EvidenceRules()
    _tallies: dict[Endpoint, _Tally] = field(default_factory=dict)
    _by_envoy: dict[str, dict[Endpoint, _Seen]] = field(default_factory=dict)

    def report(self, envoy: str, loads: Iterable[EndpointLoad]) -> list[FailingEndpoint]:
        """Take ``envoy``'s latest report; the endpoints that started failing with it."""
        previous = self._by_envoy.pop(envoy, {})
        current: dict[Endpoint, _Seen] = {}
        touched: set[Endpoint] = set(previous)
        for load in loads:
            seen = self._seen(load)
            current[load.endpoint] = seen
            touched.add(load.endpoint)
        for endpoint, seen in previous.items():
            self._count(endpoint, seen, -1)
        for endpoint, seen in current.items():
            self._count(endpoint, seen, +1)
        self._by_envoy[envoy] = current
        return self._verdicts(touched)

    def forget(self, envoy: str) -> list[FailingEndpoint]:
        """``envoy`` stopped reporting: its opinions and load no longer count. The endpoints
        that start failing without it (it was the one that saw them serving)."""
        gone = self._by_envoy.pop(envoy, {})
        for endpoint, seen in gone.items():
            self._count(endpoint, seen, -1)
        return self._verdicts(set(gone))

    def in_flight(self, endpoint: Endpoint) -> int:
        """Requests in flight to ``endpoint`` over every reporting Envoy."""
        tally = self._tallies.get(endpoint)
        return tally.in_flight if tally is not None else 0

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint some reporting Envoy named in its latest report."""
        return list(self._tallies)

    def _seen(self, load: EndpointLoad) -> _Seen:
        completed = load.successes + load.errors
        opinion = None
        if completed:
            failing = load.errors >= self.rules.error_ratio * completed
            opinion = _Opinion.FAILING if failing else _Opinion.SERVING
        return _Seen(opinion, load.errors if opinion is _Opinion.FAILING else 0, load.in_flight)

    def _count(self, endpoint: Endpoint, seen: _Seen, sign: int) -> None:
        tally = self._tallies.setdefault(endpoint, _Tally())
        tally.failing += sign * (seen.opinion is _Opinion.FAILING)
        tally.serving += sign * (seen.opinion is _Opinion.SERVING)
        tally.errors += sign * seen.errors
        tally.in_flight += sign * seen.in_flight

    def _verdicts(self, touched: set[Endpoint]) -> list[FailingEndpoint]:
        started = []
        for endpoint in touched:
            tally = self._tallies[endpoint]
            failing = tally.is_failing(self.rules)
            if failing and not tally.failed:
                cluster, address = endpoint
                started.append(
                    FailingEndpoint(cluster, address, tally.failing, tally.serving, tally.errors)
                )
            # Failing again later takes a report where it was not (served, or was left alone).
            tally.failed = failing
        for endpoint in [e for e in touched if self._tallies[e] == _Tally()]:
            del self._tallies[endpoint]  # no Envoy names it any more
        return started
