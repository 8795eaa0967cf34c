"""A hostile uid header: refused by the miss path, and never in a Redis key or Envoy's config.

Envoy's miss path (its Lua filter) passes the uid header on as the client sent it, within what
HTTP allows: over-long values, non-ASCII bytes, spaces and tabs inside. The handler is called
directly with those and with the CR/LF no HTTP client can send; then the same values go through
a real Envoy in front of the real control plane (LocalStack). Valid but awkward uids (quotes,
backslashes, angle brackets) are bound and routed, and Envoy accepts the routes that carry them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from controlplane.admin.metrics import AdminMetrics
from controlplane.manager import StatefulRouteManager
from controlplane.misspath import MissPath
from controlplane.runtime.redis_server import RedisServer
from controlplane.runtime.stack import UID_HEADER, LocalStack, StackConfig
from controlplane.store import Store
from controlplane.xds.cache import SnapshotKey
from controlplane.xds.naming import GROUP_HEADER, MISS_PATH, SCOPE_KEY_HEADER, SERVICE_HEADER
from controlplane.xds.naming import UID_HEADER as MISS_PATH_UID_HEADER
from controlplane.xds.resources import SourceKind
from controlplane.xds.scopes import user_key
from controlplane.xds.server import XdsServer
from tests.integration.security.conftest import NAMESPACE, SERVICE, seed
from tests.support.redis_dump import redis_holds

# What Envoy may forward: each is refused (400) and stored nowhere.
FORWARDABLE = {
    "300 characters": "overlong-" + "u" * 291,
    "non-ASCII": "m\u00fcller-\u7528\u6237",
    "a space inside": "space uid",
    "a tab inside": "tab\tuid",
}
# What only a direct call can hold: HTTP ends the header line there.
UNSENDABLE = {
    "CR/LF": "crlf\r\nx-injected: 1",
    "a bare LF": "lf\nuid",
    "a NUL": "nul\x00uid",
}
# Visible ASCII a config could choke on: bound, routed, and carried intact in Envoy's routes.
AWKWARD = ["<script>alert(1)</script>", '"quoted"', 'a\\"b', "{}[]", "'single'", "$(id);`x`"]


def needles(value: str) -> list[bytes]:
    """How ``value`` could appear in Redis: as it is (UTF-8 or Latin-1)."""
    forms = {value.encode(), value.encode("latin-1", "replace")}
    return sorted(forms)


# -- the check handler, called directly --------------------------------------------------------


@pytest.fixture
async def miss_path(store: Store) -> AsyncIterator[MissPath]:
    manager = StatefulRouteManager(store, view_ttl_s=0.0)
    await seed(manager)
    xds = XdsServer(manager)
    await xds.start()
    xds.cache.snapshot(SnapshotKey("default", SourceKind.ADS))  # an Envoy of the group asked
    yield MissPath(manager, AdminMetrics(), xds)
    await xds.stop()


async def check(miss_path: MissPath, uid: str) -> aiohttp.web.Response:
    headers = CIMultiDict(
        {
            SERVICE_HEADER: f"{NAMESPACE}/{SERVICE}",
            MISS_PATH_UID_HEADER: uid,
            GROUP_HEADER: "default",
        }
    )
    request = make_mocked_request("POST", MISS_PATH, headers=headers)
    return await miss_path.place(request)


@pytest.mark.parametrize(
    "uid", [*FORWARDABLE.values(), *UNSENDABLE.values()], ids=[*FORWARDABLE, *UNSENDABLE]
)
async def test_the_miss_path_refuses_a_hostile_uid_and_stores_nothing(
    miss_path: MissPath, redis_server: RedisServer, uid: str
) -> None:
    response = await check(miss_path, uid)
    assert response.status == 400
    assert SCOPE_KEY_HEADER not in response.headers
    assert uid not in (response.text or "")  # the message does not echo it
    assert "\n" not in (response.text or "").rstrip("\n")
    assert await redis_holds(redis_server.url, needles(uid)) == []


@pytest.mark.parametrize("uid", AWKWARD)
async def test_the_miss_path_binds_awkward_visible_ascii_uids(
    miss_path: MissPath, redis_server: RedisServer, uid: str
) -> None:
    response = await check(miss_path, uid)
    assert response.status == 200
    assert response.headers[SCOPE_KEY_HEADER]
    assert await redis_holds(redis_server.url, [uid.encode()]) == [uid.encode()]


# -- through a real Envoy and the real control plane ------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[LocalStack]:
    stack = await LocalStack(StackConfig(pods=2)).start()
    yield stack
    await stack.stop()


async def raw_get(port: int, uid: bytes) -> int:
    """GET / through Envoy with ``uid`` as the header's raw bytes; the status Envoy answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\n" + UID_HEADER.encode() + b": " + uid + b"\r\n"
            b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        await asyncio.wait_for(reader.read(), 10)
        return int(status_line.split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


def strings_in(value: Any) -> set[str]:
    """Every string in a JSON document, keys included."""
    if isinstance(value, dict):
        return set(value) | {s for v in value.values() for s in strings_in(v)}
    if isinstance(value, list):
        return {s for v in value for s in strings_in(v)}
    return {value} if isinstance(value, str) else set()


async def scope_strings(stack: LocalStack) -> set[str]:
    assert stack.envoy is not None
    return strings_in(await stack.envoy.config_dump("dynamic_scoped_route_configs"))


async def eventually(probe: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await probe():
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.1)


@pytest.mark.envoy
@pytest.mark.asyncio(loop_scope="module")
async def test_hostile_uids_through_envoy_reach_neither_redis_nor_envoy_config(
    stack: LocalStack,
) -> None:
    sent = {
        **{name: value.encode() for name, value in FORWARDABLE.items()},
        "Latin-1 bytes": b"caf\xe9-uid",
        "obs-fold": b"fold\r\n continued",
        "a bare CR": b"cr\ruid",
        "a NUL": b"nul\x00uid",
    }
    statuses = {name: await raw_get(stack.proxy_port, raw) for name, raw in sent.items()}
    # Refused (400) by Envoy's codec or by the miss path, except where Envoy changed the value
    # before the miss path saw it: it drops a bare CR ("cruid" is a valid uid). Never a 5xx.
    assert statuses == {**{name: 400 for name in sent}, "a bare CR": 200}
    # One user after them: once Envoy holds its scope, any push they caused has arrived too.
    assert await raw_get(stack.proxy_port, b"after-the-hostile-uids") == 200
    marker = user_key((UID_HEADER,), UID_HEADER, "after-the-hostile-uids")

    async def marker_routed() -> bool:
        return marker in await scope_strings(stack)

    await eventually(marker_routed)

    assert stack.redis is not None
    forms = [n for raw in sent.values() for n in {raw, *needles(raw.decode("latin-1"))}]
    assert await redis_holds(stack.redis.url, forms) == []
    # The scan does see users: the one the stack routed while starting up is there.
    assert await redis_holds(stack.redis.url, [b"stack-probe"]) == [b"stack-probe"]
    assert stack.envoy is not None
    dump = await stack.envoy.get("/config_dump")
    for name, raw in sent.items():
        text = raw.decode("latin-1")
        assert text not in dump, name
        assert json.dumps(text)[1:-1] not in dump, name


@pytest.mark.envoy
@pytest.mark.asyncio(loop_scope="module")
async def test_awkward_uids_are_routed_and_envoy_accepts_their_routes(stack: LocalStack) -> None:
    async with aiohttp.ClientSession() as session:

        async def ask(uid: str) -> dict[str, Any]:
            async with session.get(stack.proxy_url + "/", headers={UID_HEADER: uid}) as r:
                assert r.status == 200, await r.text()
                answer: dict[str, Any] = await r.json()
                return answer

        first = {uid: await ask(uid) for uid in AWKWARD}
        assert {uid: a["uid"] for uid, a in first.items()} == {uid: uid for uid in AWKWARD}

        async def all_have_scopes() -> bool:
            keys = {user_key((UID_HEADER,), UID_HEADER, uid) for uid in AWKWARD}
            return keys <= await scope_strings(stack)

        await eventually(all_have_scopes)
        # Envoy took the pushed routes: no rejected update, and each user stays on its pod.
        assert stack.envoy is not None
        stats = await stack.envoy.get("/stats?filter=update_rejected")
        rejected = {
            line.split(":")[0]: int(line.split(":")[1]) for line in stats.splitlines() if line
        }
        assert all(count == 0 for count in rejected.values()), rejected
        for uid, answer in first.items():
            again = await ask(uid)
            assert again["pod"] == answer["pod"], uid
            assert again["count"] == answer["count"] + 1, uid
