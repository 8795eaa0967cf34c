"""The protobuf wire format of the discovery envelopes and of Envoy's load reports, by hand.

betterproto2 spends milliseconds per message (12 ms to parse a request carrying Envoy's 60 KB
node), so the envelopes are read and written here. Resources inside them are serialized once
per version by ``render`` and only copied here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from envoy_data_plane.google.protobuf import Struct

from controlplane.domain.fleet_evidence import EndpointLoad
from controlplane.xds.protocol import DeltaRequest, Node, Request

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, data: bytes) -> bytes:
    """A length-delimited field (string, bytes or message)."""
    return field_header(number, len(data)) + data


def field_header(number: int, length: int) -> bytes:
    """The tag and length that precede ``length`` bytes of a length-delimited field."""
    return varint(number << 3 | _BYTES) + varint(length)


def text(number: int, value: str) -> bytes:
    """A string field; empty strings are left out, as protobuf does."""
    return field(number, value.encode()) if value else b""


def any_message(type_url: str, value: bytes) -> bytes:
    """google.protobuf.Any{type_url, value}."""
    return text(1, type_url) + field(2, value)


def discovery_response(version: str, type_url: str, resources: bytes, nonce: str) -> bytes:
    """A DiscoveryResponse; ``resources`` is already encoded as repeated field 2 (Any)."""
    return text(1, version) + resources + text(4, type_url) + text(5, nonce)


def sotw_resources(type_url: str, values: Iterable[bytes]) -> bytes:
    """DiscoveryResponse.resources (field 2) for these serialized resources."""
    return b"".join(field(2, any_message(type_url, v)) for v in values)


def delta_discovery_response(
    type_url: str,
    resources: Iterable[tuple[str, str, bytes]],
    removed: Iterable[str],
    nonce: str,
) -> bytes:
    """A DeltaDiscoveryResponse from (name, version, serialized resource) triples."""
    body = b"".join(
        field(2, text(1, version) + field(2, any_message(type_url, value)) + text(3, name))
        for name, version, value in resources
    )
    gone = b"".join(field(6, name.encode()) for name in removed)
    return body + text(4, type_url) + text(5, nonce) + gone


def _fields(data: bytes | memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) for each field; length-delimited values stay as views."""
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        key, pos = _read_varint(view, pos)
        number, kind = key >> 3, key & 7
        if kind == _VARINT:
            value, pos = _read_varint(view, pos)
            yield number, value
        elif kind == _BYTES:
            length, pos = _read_varint(view, pos)
            if pos + length > end:
                raise WireError("truncated field")
            yield number, view[pos : pos + length]
            pos += length
        elif kind in (_FIXED64, _FIXED32):
            pos += 8 if kind == _FIXED64 else 4
        else:
            raise WireError(f"unsupported wire type {kind}")
    if pos != end:
        raise WireError("truncated message")


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(view) or shift > 63:
            raise WireError("bad varint")
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _str(value: int | memoryview) -> str:
    if isinstance(value, int):
        raise WireError("expected a string")
    try:
        return bytes(value).decode()
    except UnicodeDecodeError:
        raise WireError("a string field is not UTF-8") from None


def _bytes(value: int | memoryview) -> memoryview:
    if isinstance(value, int):
        raise WireError("expected a message")
    return value


def _node(data: memoryview) -> Node:
    node_id = cluster = agent = ""
    metadata: dict[str, object] = {}
    build: tuple[int, int, int] | None = None
    for number, value in _fields(data):
        if number == 1:
            node_id = _str(value)
        elif number == 2:
            cluster = _str(value)
        elif number == 3:
            metadata = _struct(_bytes(value))
        elif number == 6:
            agent = _str(value)
        elif number == 8:
            build = _build_version(_bytes(value))
    return Node(node_id, cluster, metadata, agent, build)


def _build_version(data: memoryview) -> tuple[int, int, int] | None:
    """BuildVersion.version (field 1), a SemanticVersion: (major, minor, patch)."""
    for number, value in _fields(data):
        if number == 1:
            numbers = {n: v for n, v in _fields(_bytes(value)) if isinstance(v, int)}
            return numbers.get(1, 0), numbers.get(2, 0), numbers.get(3, 0)
    return None


def _struct(data: memoryview) -> dict[str, object]:
    """google.protobuf.Struct as a dict (Envoy's node metadata)."""
    try:
        parsed: dict[str, object] = Struct.parse(bytes(data)).to_dict()
    # betterproto raises what it meets on garbage (EOFError, UnicodeDecodeError, RecursionError
    # on deep nesting, ...): any of them means the peer sent a malformed message.
    except Exception as exc:
        raise WireError(f"malformed node metadata: {exc.__class__.__name__}") from None
    return parsed


def _error_message(data: memoryview) -> str:
    """google.rpc.Status.message (field 2)."""
    return next((_str(v) for n, v in _fields(data) if n == 2), "")


def decode_request(data: bytes) -> Request:
    """Parse a DiscoveryRequest."""
    version = type_url = nonce = ""
    node: Node | None = None
    names: list[str] = []
    error: str | None = None
    for number, value in _fields(data):
        if number == 1:
            version = _str(value)
        elif number == 2:
            node = _node(_bytes(value))
        elif number == 3:
            names.append(_str(value))
        elif number == 4:
            type_url = _str(value)
        elif number == 5:
            nonce = _str(value)
        elif number == 6:
            error = _error_message(_bytes(value))
    return Request(type_url, version, node, tuple(names), nonce, error)


def decode_delta_request(data: bytes) -> DeltaRequest:
    """Parse a DeltaDiscoveryRequest."""
    type_url = nonce = ""
    node: Node | None = None
    subscribe: list[str] = []
    unsubscribe: list[str] = []
    initial: dict[str, str] = {}
    error: str | None = None
    for number, value in _fields(data):
        if number == 1:
            node = _node(_bytes(value))
        elif number == 2:
            type_url = _str(value)
        elif number == 3:
            subscribe.append(_str(value))
        elif number == 4:
            unsubscribe.append(_str(value))
        elif number == 5:
            entry = dict(_fields(_bytes(value)))
            initial[_str(entry.get(1, memoryview(b"")))] = _str(entry.get(2, memoryview(b"")))
        elif number == 6:
            nonce = _str(value)
        elif number == 7:
            error = _error_message(_bytes(value))
    return DeltaRequest(type_url, node, tuple(subscribe), tuple(unsubscribe), initial, nonce, error)


def decode_load_stats_request(data: bytes) -> tuple[Node | None, list[EndpointLoad]]:
    """Parse a LoadStatsRequest: its node and its per-endpoint stats (every locality's)."""
    node: Node | None = None
    loads: list[EndpointLoad] = []
    for number, value in _fields(data):
        if number == 1:
            node = _node(_bytes(value))
        elif number == 2:
            loads.extend(_cluster_stats(_bytes(value)))
    return node, loads


def _cluster_stats(data: memoryview) -> list[EndpointLoad]:
    """ClusterStats: cluster_name (1), upstream_locality_stats (2)."""
    cluster = ""
    localities: list[memoryview] = []
    for number, value in _fields(data):
        if number == 1:
            cluster = _str(value)
        elif number == 2:
            localities.append(_bytes(value))
    return [
        _endpoint_stats(cluster, _bytes(endpoint))
        for locality in localities
        for number, endpoint in _fields(locality)
        if number == 7  # UpstreamLocalityStats.upstream_endpoint_stats
    ]


def _endpoint_stats(cluster: str, data: memoryview) -> EndpointLoad:
    """UpstreamEndpointStats: address (1), successful (2), in progress (3), errors (4)."""
    address = ""
    counts = {2: 0, 3: 0, 4: 0}
    for number, value in _fields(data):
        if number == 1:
            address = _socket_address(_bytes(value))
        elif number in counts and isinstance(value, int):
            counts[number] = value
    return EndpointLoad(
        cluster, address, successes=counts[2], errors=counts[4], in_flight=counts[3]
    )


def _socket_address(data: memoryview) -> str:
    """Address.socket_address (1) as "ip:port" (SocketAddress.address 2, port_value 3)."""
    host, port = "", 0
    for number, value in _fields(data):
        if number != 1:
            continue
        for inner, part in _fields(_bytes(value)):
            if inner == 2:
                host = _str(part)
            elif inner == 3 and isinstance(part, int):
                port = part
    return f"{host}:{port}"
