"""A fleet on separate network namespaces: ``Network`` makes the hosts, ``Fleet`` runs the
stack on them."""

from tests.support.fleet.configs import FleetConfig
from tests.support.fleet.fleet import Fleet
from tests.support.fleet.network import NetworkUnavailable, unavailable_reason

__all__ = ["Fleet", "FleetConfig", "NetworkUnavailable", "unavailable_reason"]
