"""Resources serialized once per version, in both wire forms.

betterproto2 spends milliseconds serializing one resource, so nothing is serialized per
request: a ``Rendered`` resource holds its protobuf bytes (and, the first time a REST client
asks, its JSON), and its version is a digest of those bytes, so unchanged content keeps its
version across rebuilds and control plane restarts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

import betterproto2

from controlplane.xds import wire


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


class Fragment:
    """One message serialized: protobuf bytes now, its JSON object the first time asked.

    ``version`` names the content: a digest of the bytes unless the maker of an assembled
    fragment knows a cheaper one (hashing megabytes on every change costs more than the rest).
    """

    __slots__ = ("_json", "_make_json", "_version", "proto")

    def __init__(self, message: betterproto2.Message) -> None:
        self.proto = bytes(message)
        self._make_json: Callable[[], str] | None = lambda: _dumps(_json_names(message.to_dict()))
        self._json = ""
        self._version = ""

    @classmethod
    def assembled(cls, proto: bytes, make_json: Callable[[], str], version: str = "") -> Fragment:
        """A message put together from already serialized parts."""
        fragment = cls.__new__(cls)
        fragment.proto, fragment._make_json, fragment._json = proto, make_json, ""
        fragment._version = version
        return fragment

    @property
    def version(self) -> str:
        if not self._version:
            self._version = digest(self.proto)
        return self._version

    @property
    def json(self) -> str:
        if self._make_json is not None:
            self._json = self._make_json()
            self._make_json = None  # the JSON is all we need from the parts now
        return self._json


class Rendered:
    """One resource as Envoy receives it: name, version, protobuf bytes, JSON object text."""

    __slots__ = ("_json", "_make_json", "name", "proto", "version")

    def __init__(
        self, name: str, proto: bytes, make_json: Callable[[], str], version: str = ""
    ) -> None:
        self.name = name
        self.proto = proto
        self.version = version or digest(proto)
        self._make_json: Callable[[], str] | None = make_json
        self._json = ""

    @property
    def json(self) -> str:
        """The resource as a JSON object, with its "@type"."""
        if self._make_json is not None:
            self._json = self._make_json()
            self._make_json = None
        return self._json


def render(type_url: str, name: str, message: betterproto2.Message) -> Rendered:
    fragment = Fragment(message)
    return Rendered(name, fragment.proto, lambda: _with_type(type_url, fragment.json))


def render_with_json(
    type_url: str, name: str, message: betterproto2.Message, as_json: dict[str, object]
) -> Rendered:
    """Like ``render``, with the message's JSON object given instead of derived from it."""
    return Rendered(name, bytes(message), lambda: _with_type(type_url, _dumps(as_json)))


def render_composite(
    type_url: str,
    name: str,
    head: Fragment,
    field: int,
    json_key: str,
    parts: Sequence[Fragment],
) -> Rendered:
    """A resource made of ``head`` plus repeated message field ``field`` holding ``parts``.

    Lets a RouteConfiguration be re-assembled from cached virtual hosts when one changes,
    instead of serializing every virtual host again.
    """
    pieces = [head.proto]
    for part in parts:
        pieces += (wire.field_header(field, len(part.proto)), part.proto)
    proto = b"".join(pieces)  # one copy of what may be megabytes, not one per part

    def make_json() -> str:
        items = ",".join(p.json for p in parts)
        head_json = _with_type(type_url, head.json)
        return f"{head_json[:-1]},{_dumps(json_key)}:[{items}]}}"

    version = digest("\n".join([head.version, *(p.version for p in parts)]).encode())
    return Rendered(name, proto, make_json, version)


def _with_type(type_url: str, obj_json: str) -> str:
    rest = obj_json[1:-1]
    typed = f'"@type":{_dumps(type_url)}'
    return "{" + typed + ("," + rest if rest else "") + "}"


# betterproto2 spells a field whose name has a digit after "_" its own way; Envoy's JSON parser
# knows only protobuf's spelling and drops the field with a warning.
_PROTOBUF_JSON_NAMES = {"consecutive5Xx": "consecutive5xx"}


def _json_names(value: object) -> object:
    if isinstance(value, dict):
        return {_PROTOBUF_JSON_NAMES.get(k, k): _json_names(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_names(item) for item in value]
    return value


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
