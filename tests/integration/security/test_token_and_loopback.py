"""Every mutation needs the token; the demo stack listens on loopback only.

The token rules are checked on two servers: the admin app over the real Redis (with a snapshot
showing that a refused request wrote nothing), and the control plane process the demo starts.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from controlplane.admin import Access
from controlplane.admin.routes import OPERATIONS, Operation
from controlplane.runtime.redis_server import RedisServer
from controlplane.runtime.stack import NAMESPACE as DEMO_NAMESPACE
from controlplane.runtime.stack import SERVICE as DEMO_SERVICE
from controlplane.runtime.stack import LocalStack, StackConfig
from tests.integration.security.conftest import TOKEN, AdminServer
from tests.support.redis_dump import contents

MUTATIONS = [op for op in OPERATIONS if op.method != "GET"]
WRONG = {
    "no token": {},
    "a wrong token": {"Authorization": f"Bearer {TOKEN}x"},
    "another scheme": {"Authorization": f"Basic {TOKEN}"},
}


def path_of(op: Operation, namespace: str, service: str) -> str:
    return op.path.format(namespace=namespace, service=service, index=0, uid="alice")


def test_every_mutating_operation_is_a_write() -> None:
    assert MUTATIONS
    assert [op for op in MUTATIONS if op.access is not Access.WRITE] == []


@pytest.mark.parametrize("headers", WRONG.values(), ids=WRONG.keys())
async def test_every_mutation_without_the_token_is_401_and_writes_nothing(
    admin_server: AdminServer, redis_server: RedisServer, headers: dict[str, str]
) -> None:
    before = sorted(await contents(redis_server.url))
    async with aiohttp.ClientSession(admin_server.url, headers=headers) as session:
        for op in MUTATIONS:
            async with session.request(
                op.method, path_of(op, "games", "lobby"), json={"pod": 1}
            ) as response:
                assert response.status == 401, (op.method, op.path)
                assert response.headers["WWW-Authenticate"].startswith("Bearer ")
                assert (await response.json())["error"] == "unauthorized"
    assert sorted(await contents(redis_server.url)) == before


# -- the demo stack ---------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[LocalStack]:
    stack = await LocalStack(StackConfig(pods=2)).start()
    yield stack
    await stack.stop()


def listening() -> dict[int, set[str]]:
    """Local port -> the addresses a TCP socket listens on there (from /proc/net/tcp{,6})."""
    found: dict[int, set[str]] = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            address_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(address_hex)
            # /proc writes the address as host-order 32-bit words.
            words = struct.unpack(f"<{len(raw) // 4}I", raw)
            address = socket.inet_ntop(family, struct.pack(f">{len(words)}I", *words))
            found.setdefault(int(port_hex, 16), set()).add(address)
    return found


@pytest.mark.envoy
@pytest.mark.asyncio(loop_scope="module")
async def test_the_demo_stack_binds_every_socket_to_loopback(stack: LocalStack) -> None:
    assert StackConfig().host == "127.0.0.1"
    settings = stack.controlplane_settings()
    assert settings["listen"]["host"] == "127.0.0.1"
    assert settings["xds"]["default_group"]["listener_address"] == "127.0.0.1"
    assert stack.envoy is not None
    assert stack.envoy.config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    listeners = await stack.envoy.config_dump("dynamic_listeners")
    addresses = {
        entry["active_state"]["listener"]["address"]["socket_address"]["address"]
        for entry in listeners["configs"]
    }
    assert addresses == {"127.0.0.1"}

    assert stack.redis is not None
    ports = {
        "admin": stack.admin_port,
        "xds rest": stack.xds_rest_port,
        "xds grpc": stack.xds_grpc_port,
        "envoy admin": stack.envoy_admin_port,
        "envoy listener": stack.proxy_port,
        "redis": int(stack.redis.url.rsplit(":", 1)[1].split("/")[0]),
        **{f"pod {i}": port for i, port in enumerate(stack.pod_ports)},
    }
    bound = listening()
    assert {name: bound.get(port) for name, port in ports.items()} == {
        name: {"127.0.0.1"} for name in ports
    }


@pytest.mark.envoy
@pytest.mark.asyncio(loop_scope="module")
async def test_the_demo_control_plane_refuses_every_mutation_without_its_token(
    stack: LocalStack,
) -> None:
    async with aiohttp.ClientSession(stack.admin_url) as session:
        for op in MUTATIONS:
            path = path_of(op, DEMO_NAMESPACE, DEMO_SERVICE)
            async with session.request(op.method, path, json={"pod": 1}) as response:
                assert response.status == 401, (op.method, op.path)
        # With the token, the same kind of request is served.
        auth = {"Authorization": f"Bearer {stack.token}"}
        async with session.post(
            f"/api/v1/services/{DEMO_NAMESPACE}/{DEMO_SERVICE}/pods/0/recover", headers=auth
        ) as response:
            assert response.status == 200, await response.text()
