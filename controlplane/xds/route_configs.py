"""The RouteConfigurations of a node group, rendered once per distinct input.

Each group has a balanced RouteConfiguration (users without a scope of their own, and the miss
path's fallback) and one per placement in use (a combination of pods its users are bound to;
with a service's epoch header, the pods' epochs are part of it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from controlplane.domain import Service
from controlplane.xds import resources as res
from controlplane.xds.naming import BALANCED_ROUTE_NAME
from controlplane.xds.render import Rendered, render
from controlplane.xds.scopes import Placement

# (cluster name, pod index) -> the pod's epoch, for services that send an epoch header.
Epochs = Mapping[tuple[str, int], int]
# (cluster name, pod index) of the pods that hold their bound users no more.
Gone = Collection[tuple[str, int]]


class RouteConfigs:
    """Renders RouteConfigurations, keeping each until its inputs change."""

    def __init__(self) -> None:
        self._placements: dict[
            Placement, tuple[tuple[tuple[Service, int | None, bool], ...], Rendered]
        ] = {}
        self._balanced: dict[str, tuple[tuple[Service, ...], Rendered]] = {}

    def for_group(
        self,
        group: str,
        services: Mapping[str, Service],
        placements: Iterable[Placement],
        epochs: Epochs,
        gone: Gone = (),
    ) -> dict[str, Rendered]:
        """The group's RouteConfigurations by name: the balanced one and the placements'."""
        items = {BALANCED_ROUTE_NAME: self._balanced_route(group, services)}
        for placement in placements:
            rendered = self._placement_route(placement, services, epochs, gone)
            items[rendered.name] = rendered
        return items

    def _balanced_route(self, group: str, services: Mapping[str, Service]) -> Rendered:
        inputs = tuple(services[name] for name in sorted(services))
        cached = self._balanced.get(group)
        if cached is None or cached[0] != inputs:
            config = res.build_balanced_route(inputs)
            cached = self._balanced[group] = (inputs, render(res.ROUTE, config.name, config))
        return cached[1]

    def _placement_route(
        self, placement: Placement, services: Mapping[str, Service], epochs: Epochs, gone: Gone
    ) -> Rendered:
        inputs = tuple(
            (services[c], epochs.get((c, i)), (c, i) in gone) for c, i in placement if c in services
        )
        cached = self._placements.get(placement)
        if cached is None or cached[0] != inputs:
            config = res.build_placement_route(services, placement, epochs, gone)
            rendered = render(res.ROUTE, config.name, config)
            cached = self._placements[placement] = (inputs, rendered)
        return cached[1]
