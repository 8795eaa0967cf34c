"""A service's virtual host, re-assembled from cached parts as its users come and go.

Every user bound to one pod gets the same route, so the route is serialized once per pod and
a user's map entry is just its uid next to those bytes. One changed user thus costs one entry,
not a re-serialization of the whole map (milliseconds per message in betterproto2): the rest
is one pass over the routes, one join of cached bytes, and a version kept as a running sum of
the entries' hashes. The bytes equal ``resources.build_virtual_host``'s; the tests hold the
two together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from hashlib import blake2b

from controlplane.domain import Pod, Service
from controlplane.xds import resources as res
from controlplane.xds.render import Fragment, digest
from controlplane.xds.wire import field, field_header

# Field numbers: VirtualHost.matcher; Matcher.matcher_tree/on_no_match; MatcherTree.input/
# exact_match_map; MatchMap.map (an entry: key 1, value 2).
_VHOST_MATCHER, _TREE, _ON_NO_MATCH = 21, 2, 3
_INPUT, _EXACT_MAP, _MAP, _KEY, _VALUE = 1, 2, 1, 1, 2

_HASH_SPACE = 1 << 64


class StickyHost:
    """Renders one service's virtual host for a given set of pods and user routes."""

    def __init__(self, service: Service) -> None:
        self.service = service
        front, back = res.build_host_head(service)
        self._head, self._shared = Fragment(front), Fragment(back)
        self._input = Fragment(res.uid_input(service))
        self._fallback = Fragment(res.fallback_on_match(service))
        self._routes: dict[int, Fragment] = {}  # pod index -> its users' route
        self._keys: dict[str, int] = {}  # uid -> the pod its entry routes to
        self._entries: dict[str, bytes] = {}  # uid -> its map entry, as MatchMap field bytes
        self._hashes: dict[str, int] = {}
        self._map_length = 0
        self._hash_sum = 0  # order-free: the same users and pods give the same version

    def render(self, pods: Sequence[Pod], routes: Mapping[str, int]) -> Fragment:
        self._routes = {
            pod.index: self._routes.get(pod.index)
            or Fragment(res.sticky_on_match(self.service, pod.index))
            for pod in pods
        }
        for uid in self._keys.keys() - routes.keys():
            self._drop(uid)
        for uid, index in routes.items():
            if index not in self._routes:  # a pod that is gone: the miss path places the user
                if uid in self._keys:
                    self._drop(uid)
            elif self._keys.get(uid) != index:
                self._put(uid, index)
        return self._assemble()

    def _put(self, uid: str, key: int) -> None:
        """Add or replace a user's entry (a replaced one keeps its place in the map)."""
        entry = field(_MAP, field(_KEY, uid.encode()) + field(_VALUE, self._routes[key].proto))
        hashed = int.from_bytes(blake2b(entry, digest_size=8).digest(), "big")
        old_entry, old_hash = self._entries.get(uid, b""), self._hashes.get(uid, 0)
        self._keys[uid], self._entries[uid], self._hashes[uid] = key, entry, hashed
        self._map_length += len(entry) - len(old_entry)
        self._hash_sum = (self._hash_sum + hashed - old_hash) % _HASH_SPACE

    def _drop(self, uid: str) -> None:
        del self._keys[uid]
        self._map_length -= len(self._entries.pop(uid))
        self._hash_sum = (self._hash_sum - self._hashes.pop(uid)) % _HASH_SPACE

    def _assemble(self) -> Fragment:
        fallback = field(_ON_NO_MATCH, self._fallback.proto)
        pieces: list[bytes] = []
        if self._entries:  # Envoy rejects an empty map
            input_field = field(_INPUT, self._input.proto)
            map_header = field_header(_EXACT_MAP, self._map_length)
            tree_length = len(input_field) + len(map_header) + self._map_length
            pieces = [field_header(_TREE, tree_length), input_field, map_header]
            pieces += self._entries.values()
        matcher_length = sum(len(p) for p in pieces[:3]) + self._map_length * bool(pieces)
        matcher_length += len(fallback)
        proto = b"".join(
            [
                self._head.proto,
                field_header(_VHOST_MATCHER, matcher_length),
                *pieces,
                fallback,
                self._shared.proto,
            ]
        )
        users = list(self._keys.items())
        routes = dict(self._routes)

        def make_json() -> str:
            fallback_json = f'"onNoMatch":{self._fallback.json}'
            body = fallback_json
            if users:
                items = ",".join(f"{json.dumps(uid)}:{routes[key].json}" for uid, key in users)
                tree = f'"input":{self._input.json},"exactMatchMap":{{"map":{{{items}}}}}'
                body = f'"matcherTree":{{{tree}}},{fallback_json}'
            return f'{self._head.json[:-1]},"matcher":{{{body}}},{self._shared.json[1:]}'

        parts = [self._head.version, self._shared.version, self._input.version]
        parts.append(self._fallback.version)
        version = digest(f"{'|'.join(parts)}|{len(users)}|{self._hash_sum}".encode())
        return Fragment.assembled(proto, make_json, version)
