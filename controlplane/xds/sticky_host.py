"""A service's virtual host, re-assembled from cached parts as its users come and go.

Every user bound to one pod gets the same route, so the route is serialized once per pod and
a user's map entry is just its uid next to those bytes. One changed user thus costs one entry,
not a re-serialization of the whole map (milliseconds per message in betterproto2). The bytes
equal ``resources.build_virtual_host``'s; the tests hold the two together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from controlplane.domain import Pod, Service
from controlplane.xds import resources as res
from controlplane.xds.render import Fragment
from controlplane.xds.wire import field

# Field numbers: VirtualHost.matcher; Matcher.matcher_tree/on_no_match; MatcherTree.input/
# exact_match_map; MatchMap.map (an entry: key 1, value 2).
_VHOST_MATCHER, _TREE, _ON_NO_MATCH, _INPUT, _EXACT_MAP, _MAP, _KEY, _VALUE = (
    21,
    2,
    3,
    1,
    2,
    1,
    1,
    2,
)

_PodKey = tuple[int, str]  # (index, address): a moved pod needs its routes rendered again


class StickyHost:
    """Renders one service's virtual host for a given set of pods and user routes."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._head = Fragment(res.build_host_head(service))
        self._input = Fragment(res.uid_input(service))
        self._fallback = Fragment(res.fallback_on_match(service))
        self._routes: dict[_PodKey, Fragment] = {}
        # uid -> (pod key, the map entry as MatchMap field bytes)
        self._entries: dict[str, tuple[_PodKey, bytes]] = {}

    def render(self, pods: Sequence[Pod], routes: Mapping[str, int]) -> Fragment:
        keys = {pod.index: (pod.index, pod.address) for pod in pods}
        by_key = {keys[pod.index]: pod for pod in pods}
        self._routes = {
            key: self._routes.get(key) or Fragment(res.sticky_on_match(self.service, by_key[key]))
            for key in by_key
        }
        entries = self._entries
        for uid in entries.keys() - routes.keys():
            del entries[uid]
        for uid, index in routes.items():
            key = keys.get(index)
            if key is None:  # a route to a pod that is gone: the miss path will place the user
                entries.pop(uid, None)
                continue
            cached = entries.get(uid)
            if cached is None or cached[0] != key:
                entry = field(_KEY, uid.encode()) + field(_VALUE, self._routes[key].proto)
                entries[uid] = (key, field(_MAP, entry))
        return self._assemble(dict(entries), dict(self._routes))

    def _assemble(
        self, entries: dict[str, tuple[_PodKey, bytes]], routes: dict[_PodKey, Fragment]
    ) -> Fragment:
        matcher = field(_ON_NO_MATCH, self._fallback.proto)
        if entries:  # Envoy rejects an empty map
            exact = b"".join(entry for _, entry in entries.values())
            tree = field(_INPUT, self._input.proto) + field(_EXACT_MAP, exact)
            matcher = field(_TREE, tree) + matcher
        proto = self._head.proto + field(_VHOST_MATCHER, matcher)

        def make_json() -> str:
            fallback = f'"onNoMatch":{self._fallback.json}'
            body = fallback
            if entries:
                items = ",".join(
                    f"{json.dumps(uid)}:{routes[key].json}" for uid, (key, _) in entries.items()
                )
                tree = f'"input":{self._input.json},"exactMatchMap":{{"map":{{{items}}}}}'
                body = f'"matcherTree":{{{tree}}},{fallback}'
            return f'{self._head.json[:-1]},"matcher":{{{body}}}}}'

        return Fragment.assembled(proto, make_json)
