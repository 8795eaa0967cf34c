"""Hostile discovery requests: REST bodies and gRPC messages that are not what Envoy sends.

Each is refused (400/413, or a gRPC INVALID_ARGUMENT) or ignored; none is a 500 or an
application error, and the server answers the next, well-formed request as before.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from controlplane.xds import resources as res
from controlplane.xds import wire
from controlplane.xds.config import XdsSettings
from tests.support.raw_grpc import Raw
from tests.support.state import MemoryStateSource, service_state
from tests.support.xds_stack import XdsStack

NODE = {"id": "hostile", "cluster": "default"}
ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService"


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


MALFORMED_REST_BODIES = {
    "not JSON": b"{not json",
    "empty": b"",
    "binary garbage": bytes(range(256)) * 16,
    "not UTF-8": b'{"node": {"id": "\xff\xfe"}}',
    "NaN": b'{"version_info": NaN}',
    "an array": b"[]",
    "a string": b'"discovery"',
    "null": b"null",
    "node is a string": json.dumps({"node": "x"}).encode(),
    "node id is a number": json.dumps({"node": {"id": 5}}).encode(),
    "metadata is a list": json.dumps({"node": {"id": "x", "metadata": []}}).encode(),
    "resource_names is a string": json.dumps({"node": NODE, "resource_names": "x"}).encode(),
    "resource_names holds numbers": json.dumps({"node": NODE, "resource_names": [1]}).encode(),
    "version_info is an object": json.dumps({"version_info": {}}).encode(),
    "type_url of another type": json.dumps({"type_url": res.LISTENER}).encode(),
    "nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
    "metadata nested 5000 deep": f'{{"node": {{"id": "x", "metadata": {nested(5000)}}}}}'.encode(),
}

# Valid JSON, just large or odd: served (200), never a 500.
ODD_REST_BODIES = {
    "3 MB node metadata": json.dumps(
        {"node": {"id": "big", "metadata": {f"k{i}": "v" * 1000 for i in range(3000)}}}
    ).encode(),
    "30000 resource names": json.dumps(
        {"node": NODE, "resource_names": ["x" * 100] * 30_000}
    ).encode(),
    "control characters in the node id": json.dumps({"node": {"id": "a\u0000b\r\nc"}}).encode(),
}


@pytest.fixture
async def stack() -> AsyncIterator[XdsStack]:
    source = MemoryStateSource([service_state("games", "lobby", [9000])])
    stack = await XdsStack(source, XdsSettings(long_poll_hold_s=0.2)).start()
    yield stack
    await stack.stop()


async def post(stack: XdsStack, body: bytes, kind: str = "clusters") -> tuple[int, str]:
    url = f"http://127.0.0.1:{stack.rest_port}/v3/discovery:{kind}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=io.BytesIO(body)) as response,
    ):
        return response.status, (await response.read()).decode(errors="replace")


async def still_serves_rest(stack: XdsStack) -> None:
    status, body = await post(stack, json.dumps({"node": NODE}).encode())
    assert status == 200, body
    assert "games/lobby" in body


@pytest.mark.parametrize("body", MALFORMED_REST_BODIES.values(), ids=MALFORMED_REST_BODIES.keys())
async def test_a_malformed_rest_body_is_400_with_a_message(stack: XdsStack, body: bytes) -> None:
    status, text = await post(stack, body)
    assert status == 400, text
    assert text.startswith(("malformed DiscoveryRequest", "type_url")), text
    await still_serves_rest(stack)


@pytest.mark.parametrize("body", ODD_REST_BODIES.values(), ids=ODD_REST_BODIES.keys())
async def test_large_or_odd_but_well_formed_rest_bodies_are_served(
    stack: XdsStack, body: bytes
) -> None:
    status, text = await post(stack, body)
    assert status == 200, text[:200]
    await still_serves_rest(stack)


async def test_a_rest_body_over_the_limit_is_413(stack: XdsStack) -> None:
    status, _ = await post(stack, b" " * (5 * 1024 * 1024))
    assert status == 413
    await still_serves_rest(stack)


# -- gRPC ------------------------------------------------------------------------------------


def deep_struct(depth: int) -> bytes:
    """google.protobuf.Struct nested ``depth`` deep: {"k": {"k": ...}}."""
    struct = b""
    for _ in range(depth):
        struct = wire.field(1, wire.text(1, "k") + wire.field(2, wire.field(5, struct)))
    return struct


def sotw(node: bytes, type_url: str = res.CLUSTER, *names: str) -> bytes:
    """A DiscoveryRequest: node (2), resource_names (3), type_url (4)."""
    return wire.field(2, node) + b"".join(wire.text(3, n) for n in names) + wire.text(4, type_url)


def delta(node: bytes, type_url: str = res.CLUSTER, *names: str) -> bytes:
    """A DeltaDiscoveryRequest: node (1), type_url (2), resource_names_subscribe (3)."""
    return wire.field(1, node) + wire.text(2, type_url) + b"".join(wire.text(3, n) for n in names)


GOOD_NODE = wire.text(1, "hostile") + wire.text(2, "default")
METHODS = {"StreamAggregatedResources": sotw, "DeltaAggregatedResources": delta}

Build = Callable[..., bytes]
# Bytes no protobuf parser should accept, and fields of the wrong wire type or encoding; each
# made for the method's request type by its builder.
GARBAGE: dict[str, Callable[[Build], bytes]] = {
    "random bytes": lambda _: b"\xff\xff\xff\xff\xff\xff",
    "truncated varint": lambda _: b"\x0a",
    "truncated field": lambda _: b"\x0a\x10ab",
    "unknown wire type": lambda _: b"\x0b",
    "a string that is not UTF-8": lambda build: build(wire.field(1, b"\xff\xfe")),
    # The node's field number with a varint where a message belongs.
    "node as a varint": lambda build: b"\x10\x05" if build is sotw else b"\x08\x05",
    "node metadata nested 3000 deep": lambda build: build(
        GOOD_NODE + wire.field(3, deep_struct(3000))
    ),
}


async def exchange(stack: XdsStack, method: str, *messages: bytes, wait_s: float = 0.3) -> int:
    """Send ``messages`` on one stream; the number of responses within ``wait_s``."""
    channel = Channel("127.0.0.1", stack.grpc_port)
    try:
        async with channel.request(
            f"{ADS}/{method}", Cardinality.STREAM_STREAM, Raw, Raw, timeout=5
        ) as stream:
            for message in messages:
                await stream.send_message(Raw(message))
            replies = 0
            try:
                while True:
                    await asyncio.wait_for(stream.recv_message(), wait_s)
                    replies += 1
            except TimeoutError:
                await stream.cancel()
            return replies
    finally:
        channel.close()


async def still_serves_grpc(stack: XdsStack, method: str) -> None:
    assert await exchange(stack, method, METHODS[method](GOOD_NODE)) == 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", GARBAGE)
async def test_a_malformed_grpc_message_ends_its_stream_with_invalid_argument(
    stack: XdsStack, method: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(GRPCError) as error:
        await exchange(stack, method, GARBAGE[name](METHODS[method]))
    assert error.value.status is Status.INVALID_ARGUMENT
    assert str(error.value.message).startswith("malformed request")
    assert "Application error" not in caplog.text  # not logged as our bug
    await still_serves_grpc(stack, method)


@pytest.mark.parametrize("method", METHODS)
async def test_garbage_after_a_good_request_ends_only_that_stream(
    stack: XdsStack, method: str
) -> None:
    with pytest.raises(GRPCError) as error:
        await exchange(stack, method, METHODS[method](GOOD_NODE), b"\xff\xff")
    assert error.value.status is Status.INVALID_ARGUMENT
    await still_serves_grpc(stack, method)


@pytest.mark.parametrize("method", METHODS)
async def test_nonsense_type_urls_and_resource_names_are_ignored(
    stack: XdsStack, method: str
) -> None:
    build = METHODS[method]
    nonsense = [
        build(GOOD_NODE, "type.googleapis.com/nope", "x" * 10_000),
        build(GOOD_NODE, "", "\u202e\r\n"),
        build(GOOD_NODE, "\x00" * 64),
        b"",  # every field absent
    ]
    assert await exchange(stack, method, *nonsense) == 0
    # Nonsense first, then a real subscription on the same stream: served.
    assert await exchange(stack, method, nonsense[0], build(GOOD_NODE, res.CLUSTER)) == 1
    # Names that match nothing: an answer with no resources, not an error.
    assert await exchange(stack, method, build(GOOD_NODE, res.ENDPOINT, "../../etc", "*")) == 1
    await still_serves_grpc(stack, method)
