"""The scopes Envoy picks a user's routes by (Scoped RDS), one table per node group (pure).

Envoy computes a *scope key* for every request: its early header mutation writes
``SCOPE_KEY_HEADER`` from the uid header(s) before any route is chosen, and the scope whose
key equals it names the RouteConfiguration the request is routed by. A user Envoy carries
has one scope, naming the RouteConfiguration of its *placement*: the pod it is bound to in
each service (``placement_route_name``). All users of one pod share that RouteConfiguration,
so a user's arrival or move adds or re-points one small scope, never a whole map.

Keys: ``"u"`` and the values of the group's uid headers (sorted by header name), separated by
one space, which a valid uid never holds. A user of a service is keyed with its uid in its
service's header's place and the others empty, which is what a client sending only that
header produces. Two scopes need no user: ``"u"`` plus the empty values (a request with no uid
header) and ``FALLBACK_KEY`` (what the miss path selects when the control plane cannot place
the user). Both name the balanced RouteConfiguration. Each placement in use has a scope too,
keyed ``PLACEMENT_PREFIX`` and its RouteConfiguration's name: the miss path selects it for a
new user's first request, which so needs no push of the user's own scope. The early header
mutation always writes a key starting with ``"u"``, so no client can select any other key.

The table keeps a revision, bumped by every change, and a bounded journal of the keys each
revision changed, so a delta xDS stream sends only what changed since its last response
(O(changes), not O(users)); a stream further behind than the journal diffs the whole table.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from hashlib import blake2b

from controlplane.xds.naming import BALANCED_ROUTE_NAME, placement_route_name
from controlplane.xds.wire import field, text

KEY_PREFIX = "u"
FALLBACK_KEY = "-"
PLACEMENT_PREFIX = "="
SEPARATOR = " "
JOURNAL_LENGTH = 100_000
_HASH_SPACE = 1 << 64

# One pod per service a user is bound to: ((cluster name, pod index), ...), sorted.
Placement = tuple[tuple[str, int], ...]


def key_format(uid_headers: Sequence[str]) -> str:
    """The early header mutation's value (Envoy's substitution format) for these headers."""
    return KEY_PREFIX + SEPARATOR.join(f"%REQ({h})%" for h in uid_headers)


def user_key(uid_headers: Sequence[str], header: str, uid: str) -> str:
    """The key of ``uid`` in the service whose uid header is ``header``."""
    return KEY_PREFIX + SEPARATOR.join(uid if h == header else "" for h in uid_headers)


def no_user_key(uid_headers: Sequence[str]) -> str:
    return KEY_PREFIX + SEPARATOR * (len(uid_headers) - 1)


def encode_scope(key: str, route: str) -> bytes:
    """ScopedRouteConfiguration{name, route_configuration_name, key{fragments[string_key]}},
    by hand: one per user, and betterproto2 takes milliseconds per message."""
    return text(1, key) + text(2, route) + field(3, field(1, text(1, key)))


def scope_json(key: str, route: str) -> str:
    name = json.dumps(key)
    return (
        '{"@type":"type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration",'
        f'"name":{name},"routeConfigurationName":{json.dumps(route)},'
        f'"key":{{"fragments":[{{"stringKey":{name}}}]}}}}'
    )


class ScopeTable:
    """key -> the RouteConfiguration its scope names, for one node group."""

    def __init__(self, uid_headers: Sequence[str], epoch: str) -> None:
        self.uid_headers = tuple(uid_headers)
        self._epoch = epoch  # tells this process's versions from a restarted one's
        fixed = dict.fromkeys((no_user_key(self.uid_headers), FALLBACK_KEY), BALANCED_ROUTE_NAME)
        self.routes: dict[str, str] = dict(fixed)
        self._users: dict[str, Placement] = {}
        self._placements: dict[Placement, int] = {}  # placement -> users naming it
        self._placed_at: dict[Placement, int] = {}  # placement -> revision its scope came in
        self.revision = 0
        # Bumped when a placement gains its first user or loses its last.
        self.placements_changed = 0
        self._journal: deque[tuple[int, str]] = deque(maxlen=JOURNAL_LENGTH)
        self._forgotten = 0  # the newest revision the journal no longer holds whole
        self._hash_sum = sum(_hash(k, r) for k, r in fixed.items()) % _HASH_SPACE

    @property
    def version(self) -> str:
        """The whole table's version (SotW and REST send every scope under it)."""
        return f"{self._epoch}.{self.revision}.{self._hash_sum:x}"

    def placements(self) -> Collection[Placement]:
        """The placements some user names: each needs its RouteConfiguration."""
        return self._placements.keys()

    def placement(self, key: str) -> Placement | None:
        return self._users.get(key)

    def point(self, key: str, placement: Placement) -> bool:
        """Point ``key``'s scope at ``placement`` (empty: no scope); True if that changed."""
        old = self._users.get(key)
        if old == placement:
            return False
        self.revision += 1
        if old is not None:
            self._release(old)
            self._forget(key)
        if placement:
            self._users[key] = placement
            users = self._placements[placement] = self._placements.get(placement, 0) + 1
            if users == 1:
                self._add(placement_key(placement), placement_route_name(placement))
                self._placed_at[placement] = self.revision
                self.placements_changed += 1
            self._add(key, placement_route_name(placement))
        else:
            self._note(key)
        return True

    def placed_at(self, placement: Placement) -> int:
        """The revision that brought ``placement``'s own scope (an Envoy holding it can route
        any user of the placement)."""
        return self._placed_at[placement]

    def changed_since(self, revision: int) -> set[str] | None:
        """Keys changed after ``revision``; None when the journal does not reach back."""
        if revision == self.revision:
            return set()
        if revision < self._forgotten:
            return None
        changed: set[str] = set()
        for number, key in reversed(self._journal):
            if number <= revision:
                break
            changed.add(key)
        return changed

    def proto(self, key: str) -> bytes:
        return encode_scope(key, self.routes[key])

    def items(self, names: Iterable[str] | None = None) -> Iterable[tuple[str, str]]:
        """(key, RouteConfiguration name) of the scopes named (None: all)."""
        keys = self.routes.keys() if names is None else (n for n in names if n in self.routes)
        return ((key, self.routes[key]) for key in keys)

    def _note(self, key: str) -> None:
        if len(self._journal) == self._journal.maxlen:
            self._forgotten = self._journal[0][0]  # that revision's changes are no longer whole
        self._journal.append((self.revision, key))

    def _add(self, key: str, route: str) -> None:
        self._note(key)
        self.routes[key] = route
        self._hash_sum = (self._hash_sum + _hash(key, route)) % _HASH_SPACE

    def _remove(self, key: str) -> None:
        route = self.routes.pop(key)
        self._hash_sum = (self._hash_sum - _hash(key, route)) % _HASH_SPACE

    def _forget(self, key: str) -> None:
        self._remove(key)
        del self._users[key]

    def _release(self, placement: Placement) -> None:
        left = self._placements[placement] - 1
        if left:
            self._placements[placement] = left
            return
        del self._placements[placement], self._placed_at[placement]
        key = placement_key(placement)
        self._remove(key)
        self._note(key)
        self.placements_changed += 1


def placement_key(placement: Placement) -> str:
    return PLACEMENT_PREFIX + placement_route_name(placement)


def revision_of(version: str) -> int | None:
    """The revision in a ``ScopeTable.version``; None for a version not of that form."""
    parts = version.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return int(parts[1])


def placement_of(routes: Mapping[str, int]) -> Placement:
    """A placement from cluster name -> pod index."""
    return tuple(sorted(routes.items()))


def _hash(key: str, route: str) -> int:
    return int.from_bytes(blake2b(f"{key}\n{route}".encode(), digest_size=8).digest(), "big")
