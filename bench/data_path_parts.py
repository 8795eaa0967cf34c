"""Data path, part by part: what each piece of our per-request path costs against plain Envoy.

``bench.data_path`` measures our whole config against plain round robin; this takes it apart.
Every variant below is an Envoy (one worker) between wrk and the same C++ pods
(``pods_bootstrap``), compared with plain round robin (``round_robin_bootstrap``) by
data_path's shared-core method: both proxies pinned on the same core and loaded at the same
moment (half the connections each, wrk and the pods on the other core), so the ratio of their
request rates is the inverse ratio of their cost per request. Every request names a bound
user (wrk cycles through the users list, as data_path does).

    V0  A/A: plain round robin against a second plain round robin.
    V1  ours, live: the real xDS server (delta ADS, envoy/delta.yaml) with N bound users.
    V1r ours, replayed: V1's own config (Envoy's /config_dump of V1: listener, clusters,
        scopes, routes, endpoints), the cluster STATIC: tells whether the variants below,
        served the same way, stand for the real thing.
    V2  scoped routes keyed directly on x-uid (no early header mutation), N scopes naming 4
        RouteConfigurations (one per pod, as ours), each one route to a plain ROUND_ROBIN
        cluster (no subset lb, no retry policy, no outlier detection, no Lua): the ceiling of
        scoped routing.
    V2e V2 with the key extracted with ``element_separator`` "," (element 0).
    V3  V2 + the early header mutation writing x-stateful-route-key = "u%REQ(x-uid)%" and the
        key builder reading that header (as ours).
    V3n V3 with "%REQ(x-uid)%" (no literal prefix).
    V4  V3 + the Lua filter in the chain, disabled per route (FilterConfig{disabled: true}).
    V5a V4 + per-pod subset routing (metadata_match, single_host_per_subset), ROUND_ROBIN.
    V5  V4 + per-pod subset routing like ours: RING_HASH with hash_balance_factor, the route's
        hash policy on x-uid, fallback ANY_ENDPOINT (V1's own cluster, renamed).
    V6a V5 + ours' retry policy (on the virtual host).
    V6  V6a + ours' outlier detection: V5 + retry policy and outlier detection like ours.
    V7  no scopes: one static route to V5's subset cluster with a metadata_match (pod 0).
    A1  ours (V1r) keyed directly on x-uid: no early header mutation, the users' scopes keyed
        by the bare uid (the formatter step taken out of the real config).
    A2  ours (V1r) with the cluster's lb_policy ROUND_ROBIN and no route hash policy.
    R-* ours (V1r) less one part: R-dom (domains "*" only), R-meta (no route metadata), R-to
        (no explicit route timeout), R-scp (the users' scopes only), R-lua (no Lua filter),
        R-rty (no retry policy), R-out (no outlier detection).

Scopes reach Envoy from a file (SRDS, path_config_source) and RouteConfigurations over
REST-JSON from this process (Envoy's file subscription takes one RouteConfiguration per file,
and scoped routes name one RDS source), asked for once at start: all users of a pod share one
RouteConfiguration, as ours. Inline scopes, each with its own inline RouteConfiguration, would
hold N RouteConfigurations instead of 4.

Besides each round's req/s ratio, the CPU each proxy used per request (the sum of its
threads' run time, /proc/<pid>/task/*/schedstat, over the round, divided by the requests wrk
counted) gives each part's cost in microseconds. All Envoys are up at once and each round
runs them in turn, so the machine's drift spreads over all of them. One Envoy process keeps
its own speed from round to round (+-2% here, its layout in memory), so each variant runs as
``--instances`` processes (V1: one) and the table shows each instance's median too: a step
smaller than that spread is not measured. Bounded: each wrk run ``--seconds``; the whole run
is rounds x instances x variants x (seconds + ~0.6 s) plus start-up.

    python -m bench.data_path_parts     # V0-V7, A1, R-rty, R-out; 10,000 users; ~6 min
    python -m bench.data_path_parts [--users 10000] [--instances 3] [--rounds 3]
                                    [--seconds 3] [--variants V0,V1,V2e,V3n,V5a,...]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench._common import (
    ENVOY_DIR,
    envoy,
    free_ports,
    pin,
    pods_bootstrap,
    round_robin_bootstrap,
    run_wrk,
    xds_stack,
)
from bench.data_path import LOAD_CPUS, PODS, PROXY_CPUS, bound_users
from controlplane.runtime.envoy import EnvoyProcess, load_bootstrap
from controlplane.runtime.ports import free_port
from controlplane.xds.config import NodeGroupSettings, XdsSettings
from tests.support.state import MemoryStateSource, service_state

HCM = (
    "type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager"
)
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SCOPED = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
MUTATION = (
    "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3."
    "HeaderMutation"
)
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
LUA = "envoy.filters.http.lua"
LUA_OFF = {
    LUA: {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
}
KEY_HEADER = "x-stateful-route-key"
RDS_CLUSTER = "parts-rds"
ALL_VARIANTS = (
    "V0", "V1", "V1r", "V2", "V2e", "V3", "V3n", "V4", "V5a", "V5", "V6a", "V6", "V7", "A1", "A2",
    "R-dom", "R-meta", "R-to", "R-scp", "R-lua", "R-rty", "R-out",
)  # fmt: skip
# The default run, ~6 minutes on 2 cores at 10,000 users.
DEFAULT_VARIANTS = ("V0", "V1", "V1r", "V2", "V3", "V4", "V5", "V6", "V7", "A1", "R-rty", "R-out")
# Each step against the one it adds to: (variant, previous, what the step adds).
STEPS = (
    ("V2", "V0", "scoped routes on x-uid, N scopes, 4 RouteConfigurations"),
    ("V2e", "V2", "key by element_separator instead of index"),
    ("V3", "V2", 'early header mutation "u%REQ(x-uid)%" + key from that header'),
    ("V3n", "V2", 'early header mutation "%REQ(x-uid)%" + key from that header'),
    ("V4", "V3", "Lua filter in the chain, disabled per route"),
    ("V5a", "V4", "subset lb (ROUND_ROBIN) + metadata_match"),
    ("V5", "V4", "subset lb like ours (RING_HASH bounded, hash policy on x-uid)"),
    ("V6a", "V5", "retry policy like ours (virtual host)"),
    ("V6", "V6a", "outlier detection like ours"),
    ("V1r", "V6", "the rest of ours (domains, metadata, timeout, EDS->STATIC, extra scopes)"),
    ("V1", "V1r", "live delta ADS instead of files"),
    ("V7", "V0", "no scopes: one route with metadata_match to V5's subset cluster"),
    ("A1", "V1r", "ours without the early header mutation (key = x-uid)"),
    ("A2", "V1r", "ours with ROUND_ROBIN and no hash policy"),
    ("R-dom", "V1r", 'ours with domains ["*"] only'),
    ("R-meta", "V1r", "ours without route metadata"),
    ("R-to", "V1r", "ours without the explicit route timeout"),
    ("R-scp", "V1r", "ours with the users' scopes only"),
    ("R-lua", "V1r", "ours without the Lua filter"),
    ("R-rty", "V1r", "ours without the retry policy"),
    ("R-out", "V1r", "ours without outlier detection"),
)


# -- configs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parts:
    """What a file-served variant holds; the defaults are V2."""

    scoped: bool = True
    key_from: str = "index"  # "index" | "element": how the fragment is extracted
    mutation: str | None = None  # the early header mutation's value, if any
    lua: bool = False
    subset: str | None = None  # None (plain ROUND_ROBIN) | "rr" | "ours"
    retry: bool = False
    outlier: bool = False


PARTS = {
    "V2": Parts(),
    "V2e": Parts(key_from="element"),
    "V3": Parts(mutation="u%REQ(x-uid)%"),
    "V3n": Parts(mutation="%REQ(x-uid)%"),
    "V4": Parts(mutation="u%REQ(x-uid)%", lua=True),
    "V5a": Parts(mutation="u%REQ(x-uid)%", lua=True, subset="rr"),
    "V5": Parts(mutation="u%REQ(x-uid)%", lua=True, subset="ours"),
    "V6a": Parts(mutation="u%REQ(x-uid)%", lua=True, subset="ours", retry=True),
    "V6": Parts(mutation="u%REQ(x-uid)%", lua=True, subset="ours", retry=True, outlier=True),
    "V7": Parts(scoped=False, subset="ours"),
}


@dataclass
class Ours:
    """Pieces of V1's config as Envoy holds it (its /config_dump)."""

    hcm: dict[str, Any]
    cluster: dict[str, Any]  # the service's cluster, EDS
    miss_cluster: dict[str, Any]
    endpoints: dict[str, Any]  # its ClusterLoadAssignment
    scopes: list[dict[str, Any]]
    routes: list[dict[str, Any]]
    port: int

    @classmethod
    def from_dump(cls, dump: dict[str, Any], port: int) -> Ours:
        by_type = {c["@type"].rsplit(".", 1)[1]: c for c in dump["configs"]}
        clusters = [c["cluster"] for c in by_type["ClustersConfigDump"]["dynamic_active_clusters"]]
        (service,) = [c for c in clusters if c["type"] == "EDS"]
        (miss,) = [c for c in clusters if c["type"] != "EDS"]
        endpoints = [
            e["endpoint_config"]
            for e in by_type["EndpointsConfigDump"]["dynamic_endpoint_configs"]
            if e["endpoint_config"]["cluster_name"] == service["name"]
        ]
        (listener,) = by_type["ListenersConfigDump"]["dynamic_listeners"]
        (hcm,) = [
            f["typed_config"]
            for f in listener["active_state"]["listener"]["filter_chains"][0]["filters"]
        ]
        (scoped,) = by_type["ScopedRoutesConfigDump"]["dynamic_scoped_route_configs"]
        routes = [r["route_config"] for r in by_type["RoutesConfigDump"]["dynamic_route_configs"]]
        return cls(hcm, service, miss, endpoints[0], scoped["scoped_route_configs"], routes, port)

    @property
    def lua(self) -> dict[str, Any]:
        return next(f for f in self.hcm["http_filters"] if f["name"] == LUA)

    def static_cluster(self) -> dict[str, Any]:
        cluster = {k: v for k, v in copy.deepcopy(self.cluster).items() if k != "@type"}
        del cluster["eds_cluster_config"]
        cluster["type"] = "STATIC"
        assignment = {k: v for k, v in copy.deepcopy(self.endpoints).items() if k != "@type"}
        for locality in assignment.get("endpoints", []):
            # The dump shows an unset locality weight as 0, which a config may not say.
            if not locality.get("load_balancing_weight"):
                locality.pop("load_balancing_weight", None)
        cluster["load_assignment"] = assignment
        return cluster


class RouteServer:
    """RDS over REST-JSON for the file-served variants (Envoy's file subscription takes one
    RouteConfiguration per file, and scoped routes name a single RDS source): each variant's
    Envoy (its node id) asks once for each of its RouteConfigurations, and re-asks only after
    an hour. Nothing here runs while wrk does."""

    def __init__(self) -> None:
        self.routes: dict[str, dict[str, dict[str, Any]]] = {}  # node id -> name -> config
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v3/discovery:routes", self._routes)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _routes(self, request: web.Request) -> web.Response:
        body = await request.json()
        node = body.get("node", {}).get("id", "")
        names = body.get("resource_names") or body.get("resourceNames") or []
        held = self.routes.get(node, {})
        if not names or any(n not in held for n in names):
            return web.Response(status=404, text=f"node {node!r} has no {names}")
        resources = [held[n] for n in names]
        return web.json_response({"version_info": "1", "resources": resources, "type_url": ROUTE})


@dataclass
class Where:
    """Where a file-served variant's Envoy finds its scopes (a file) and routes (REST)."""

    node: str
    folder: Path
    server: RouteServer

    def bootstrap(self, port: int, hcm: dict[str, Any], clusters: list[Any]) -> dict[str, Any]:
        listener = {
            "name": "proxy",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": hcm,
                        }
                    ]
                }
            ],
        }
        rds = _rr_cluster(RDS_CLUSTER, [self.server.port])
        return {
            "node": {"id": self.node, "cluster": "parts"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {"listeners": [listener], "clusters": [*clusters, rds]},
        }

    def scoped_routes(
        self, header: str, key_from: str, scopes: list[dict[str, Any]], routes: list[Any]
    ) -> dict[str, Any]:
        """Scoped routes: scopes (SRDS) from a file, RouteConfigurations (RDS) over REST."""
        scopes_path = self.folder / "scopes.json"
        scopes_path.write_text(json.dumps({"version_info": "1", "resources": scopes}))
        self.server.routes[self.node] = {r["name"]: r for r in routes}
        extractor: dict[str, Any] = {"name": header, "index": 0}
        if key_from == "element":
            extractor["element_separator"] = ","
        return {
            "name": "scopes",
            "scope_key_builder": {"fragments": [{"header_value_extractor": extractor}]},
            "rds_config_source": {
                "api_config_source": {
                    "api_type": "REST",
                    "transport_api_version": "V3",
                    "cluster_names": [RDS_CLUSTER],
                    "refresh_delay": "3600s",
                    "request_timeout": "10s",
                },
                "resource_api_version": "V3",
            },
            "scoped_rds": {
                "scoped_rds_config_source": {
                    "path_config_source": {"path": str(scopes_path)},
                    "resource_api_version": "V3",
                }
            },
        }


def _scope(key: str, route: str) -> dict[str, Any]:
    return {
        "@type": SCOPED,
        "name": key,
        "route_configuration_name": route,
        "key": {"fragments": [{"string_key": key}]},
    }


def _rr_cluster(name: str, pod_ports: Sequence[int]) -> dict[str, Any]:
    cluster: dict[str, Any] = round_robin_bootstrap(0, pod_ports)["static_resources"]["clusters"][0]
    cluster["name"] = name
    return cluster


def parts_bootstrap(
    parts: Parts,
    ours: Ours,
    users: dict[str, int],
    pod_ports: Sequence[int],
    port: int,
    where: Where,
) -> dict[str, Any]:
    """A file-served variant built from ``parts`` and V1's own pieces."""
    if parts.subset is None:
        cluster = _rr_cluster("pods", pod_ports)
    else:
        cluster = ours.static_cluster()
        cluster["name"] = "pods"
        cluster["load_assignment"]["cluster_name"] = "pods"
        if parts.subset == "rr":
            cluster["lb_policy"] = "ROUND_ROBIN"
            cluster.pop("common_lb_config", None)
        if not parts.outlier:
            cluster.pop("outlier_detection", None)
    assert "outlier_detection" not in cluster or parts.outlier

    def route_config(name: str, pod: int | None) -> dict[str, Any]:
        action: dict[str, Any] = {"cluster": "pods"}
        if parts.subset is not None:
            action["metadata_match"] = {"filter_metadata": {"envoy.lb": {"pod": str(pod)}}}
        if parts.subset == "ours":
            action["hash_policy"] = [{"header": {"header_name": "x-uid"}}]
        route: dict[str, Any] = {"match": {"prefix": "/"}, "route": action}
        if parts.lua:
            route["typed_per_filter_config"] = LUA_OFF
        host: dict[str, Any] = {"name": "pods", "domains": ["*"], "routes": [route]}
        if parts.retry:
            (vhost,) = ours.routes[0]["virtual_hosts"]
            host["retry_policy"] = copy.deepcopy(vhost["retry_policy"])
        return {"@type": ROUTE, "name": name, "virtual_hosts": [host]}

    filters = [copy.deepcopy(ours.lua)] if parts.lua else []
    hcm: dict[str, Any] = {
        "@type": HCM,
        "stat_prefix": "parts",
        "http_filters": [*filters, ROUTER],
    }
    if not parts.scoped:
        hcm["route_config"] = {k: v for k, v in route_config("one", 0).items() if k != "@type"}
        return where.bootstrap(port, hcm, [cluster])
    prefix = ""
    header = "x-uid"
    if parts.mutation is not None:
        header = KEY_HEADER
        prefix = parts.mutation.split("%", 1)[0]
        hcm["early_header_mutation_extensions"] = [
            {
                "name": "scope-key",
                "typed_config": {
                    "@type": MUTATION,
                    "mutations": [
                        {
                            "append": {
                                "header": {"key": KEY_HEADER, "value": parts.mutation},
                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                            }
                        }
                    ],
                },
            }
        ]
    scopes = [_scope(prefix + uid, f"pod-{pod}") for uid, pod in users.items()]
    routes = [route_config(f"pod-{i}", i) for i in range(len(pod_ports))]
    hcm["scoped_routes"] = where.scoped_routes(header, parts.key_from, scopes, routes)
    return where.bootstrap(port, hcm, [cluster])


# What a replayed variant leaves out of ours: variant -> the parts dropped (``replay_bootstrap``).
DROPS: dict[str, frozenset[str]] = {
    "V1r": frozenset(),
    "A1": frozenset({"mutation"}),
    "A2": frozenset({"hash"}),
    "R-dom": frozenset({"domains"}),
    "R-meta": frozenset({"metadata"}),
    "R-to": frozenset({"timeout"}),
    "R-scp": frozenset({"scopes"}),
    "R-lua": frozenset({"lua"}),
    "R-rty": frozenset({"retry"}),
    "R-out": frozenset({"outlier"}),
}


def replay_bootstrap(ours: Ours, port: int, where: Where, drop: frozenset[str]) -> dict[str, Any]:
    """V1's config from a file (scopes) and REST (routes), the cluster STATIC, less ``drop``:
    "mutation" (no early header mutation: the key is x-uid itself, the users' scopes keyed by
    the bare uid), "hash" (ROUND_ROBIN, no route hash policy), "domains" (the virtual hosts
    answer "*" alone), "metadata" (no route metadata), "timeout" (the route's explicit 15 s,
    Envoy's default anyway), "scopes" (only the users' scopes), "lua" (no Lua filter, no
    per-route FilterConfig), "retry" (no retry policy on the virtual hosts), "outlier" (no
    outlier detection)."""
    hcm = copy.deepcopy(ours.hcm)
    scopes = copy.deepcopy(ours.scopes)
    routes = copy.deepcopy(ours.routes)
    cluster = ours.static_cluster()
    header = hcm["scoped_routes"]["scope_key_builder"]["fragments"][0]["header_value_extractor"]
    if "scopes" in drop:
        scopes = [s for s in scopes if s["name"].startswith("u") and len(s["name"]) > 1]
    if "mutation" in drop:
        del hcm["early_header_mutation_extensions"]
        header["name"] = "x-uid"
        for scope in scopes:
            if scope["name"].startswith("u") and len(scope["name"]) > 1:
                key = scope["name"][1:]
                scope["name"] = key
                scope["key"]["fragments"][0]["string_key"] = key
    if "hash" in drop:
        cluster["lb_policy"] = "ROUND_ROBIN"
        cluster.pop("common_lb_config", None)
    if "outlier" in drop:
        cluster.pop("outlier_detection")
    if "lua" in drop:
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != LUA]
    for route_config in routes:
        for host in route_config["virtual_hosts"]:
            if "domains" in drop:
                host["domains"] = ["*"]
            if "retry" in drop:
                host.pop("retry_policy")
            for route in host["routes"]:
                if "hash" in drop:
                    route["route"].pop("hash_policy", None)
                if "metadata" in drop:
                    route.pop("metadata")
                if "timeout" in drop:
                    route["route"].pop("timeout")
                if "lua" in drop:
                    route.pop("typed_per_filter_config")
    files = where.scoped_routes(header["name"], "index", scopes, routes)
    for source in ("rds_config_source", "scoped_rds"):
        hcm["scoped_routes"][source] = files[source]
    miss = {k: v for k, v in copy.deepcopy(ours.miss_cluster).items() if k != "@type"}
    return where.bootstrap(port, hcm, [cluster, miss])


# -- measuring --------------------------------------------------------------------------------


def cpu_ns(pid: int) -> int:
    """Run time of every thread of ``pid`` so far (schedstat, ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


@dataclass
class Round:
    plain_rps: float
    rps: float
    plain_us: float  # CPU per request
    us: float
    core_busy: float  # both proxies' CPU over the wall time: 1.0 is the whole core

    @property
    def ratio(self) -> float:
        return self.rps / self.plain_rps


@dataclass
class Instance:
    """One Envoy process of a variant (a variant runs as several: see ``--instances``)."""

    name: str
    index: int
    port: int
    process: EnvoyProcess
    rounds: list[Round] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid


async def pair(
    plain: tuple[int, int],
    other: tuple[int, int],
    uids: list[str],
    seconds: float,
    connections: int,
) -> Round:
    """Plain and ``other`` ((port, pid) each) loaded at once on their shared core."""
    before = [cpu_ns(pid) for _, pid in (plain, other)]
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            run_wrk(
                f"http://127.0.0.1:{port}/",
                uids,
                seconds=seconds,
                connections=connections // 2,
                cpus=LOAD_CPUS,
            )
            for port, _ in (plain, other)
        )
    )
    wall = time.perf_counter() - started
    used = [cpu_ns(pid) - b for (_, pid), b in zip((plain, other), before, strict=True)]
    for result in results:
        if result["errors"]:
            raise RuntimeError(f"a run had errors (a request found no route?): {result}")
    (a, b), (ua, ub) = results, used
    return Round(
        a["rps"],
        b["rps"],
        ua / a["requests"] / 1000,
        ub / b["requests"] / 1000,
        (ua + ub) / wall / 1e9,
    )


async def check(url: str, users: dict[str, int], by_pod: bool, sample: int = 200) -> None:
    """A sample of users (the last ones) answered 200, by their own pod if ``by_pod``."""
    async with aiohttp.ClientSession() as session:
        for uid in list(users)[-sample:]:
            async with session.get(url, headers={"x-uid": uid}) as response:
                body = await response.text()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status} for {uid}: {body}")
                if by_pod and json.loads(body)["pod"] != users[uid]:
                    raise RuntimeError(f"{url} sent {uid} to {body}, not pod {users[uid]}")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(statistics.median(values))} [{fmt(min(values))}..{fmt(max(values))}]"


def _median(rounds: Sequence[Round], value: Callable[[Round], float]) -> float:
    return statistics.median([value(r) for r in rounds])


def _ratio(r: Round) -> float:
    return r.ratio


def _extra(r: Round) -> float:
    return r.us - r.plain_us


def report(instances: list[Instance]) -> None:
    """Per variant: every round of every instance; then each instance's own median."""
    by_name: dict[str, list[Instance]] = {}
    for instance in instances:
        by_name.setdefault(instance.name, []).append(instance)
    print(
        "\nvariant  ratio vs plain (all rounds): median [min..max]  | per instance: median ratio"
        "  | CPU/request plain -> variant | extra CPU/request vs plain: median [min..max]"
        " | core busy",
        flush=True,
    )
    for name, group in by_name.items():
        rounds = [r for i in group for r in i.rounds]
        each = " ".join(f"{_median(i.rounds, _ratio):.3f}" for i in group)
        print(
            f"  {name:6} {spread([r.ratio for r in rounds], lambda x: f'{x:.3f}'):>22}"
            f"  | {each:20}"
            f"  | {_median(rounds, lambda r: r.plain_us):6.2f} -> "
            f"{_median(rounds, lambda r: r.us):6.2f} us"
            f"  | {spread([_extra(r) for r in rounds], lambda x: f'{x:+.2f}')} us"
            f"  | {_median(rounds, lambda r: r.core_busy):.2f}",
            flush=True,
        )
    print(
        "\nstep (variant - previous): change of the median ratio, of the median extra CPU/request",
        flush=True,
    )
    for name, previous, what in STEPS:
        if name not in by_name or previous not in by_name:
            continue
        a = [r for i in by_name[name] for r in i.rounds]
        b = [r for i in by_name[previous] for r in i.rounds]
        ratio = _median(a, _ratio) - _median(b, _ratio)
        cost = _median(a, _extra) - _median(b, _extra)
        print(
            f"  {name:6} - {previous:6}: {ratio:+.3f}x  {cost:+.2f} us/request  {what}",
            flush=True,
        )


# -- the run ----------------------------------------------------------------------------------


async def run(
    users: int, rounds: int, seconds: float, connections: int, names: list[str], instances: int
) -> None:
    started = time.perf_counter()
    print(
        f"data_path_parts: {users:,} bound users; {instances} Envoy instance(s) per variant (V1: "
        f"one), {rounds} rounds x {seconds:g} s each; {connections} connections split between "
        f"the pair; load average {load_average()}",
        flush=True,
    )
    pod_ports = free_ports(PODS)
    plain_port = free_port()
    bound = bound_users(users)
    uids = list(bound)
    pods = envoy(pods_bootstrap(pod_ports))
    plain = envoy(round_robin_bootstrap(plain_port, pod_ports))
    processes: list[EnvoyProcess] = [pods, plain]
    measured: list[Instance] = []
    stack = None
    workdir = await asyncio.to_thread(tempfile.mkdtemp, prefix="bench-parts-")
    server = RouteServer()

    async def up(process: EnvoyProcess) -> None:
        if process not in processes:
            processes.append(process)
        await process.start()
        assert process.process is not None
        pin(process.process.pid, LOAD_CPUS if process is pods else PROXY_CPUS)

    try:
        await server.start()
        await up(pods)
        await up(plain)
        for index in range(instances if "V0" in names else 0):
            port = free_port()
            twin = envoy(round_robin_bootstrap(port, pod_ports))
            await up(twin)
            measured.append(Instance("V0", index, port, twin))
        # V1: the real xDS server and its Envoy, as data_path runs them.
        proxy_port = free_port()
        base = service_state("bench", "game", pod_ports, domains=["*"])
        source = MemoryStateSource([base])
        settings = XdsSettings(default_group=NodeGroupSettings(listener_port=proxy_port))
        stack = await xds_stack(source, settings)
        live = envoy(
            load_bootstrap(ENVOY_DIR / "delta.yaml", xds_port=stack.grpc_port), start_timeout_s=120
        )
        await up(live)
        source.route(base.service.key, bound)
        url = f"http://127.0.0.1:{proxy_port}/"
        for _ in range(1200):  # bounded: ~120 s + checks
            try:
                await check(url, bound, by_pod=True, sample=20)
                break
            except (RuntimeError, aiohttp.ClientError):
                await asyncio.sleep(0.1)
        else:
            raise TimeoutError(f"Envoy did not route {users} users to their pods")
        await check(url, bound, by_pod=True)
        ours = Ours.from_dump(json.loads(await live.get("/config_dump?include_eds")), proxy_port)
        if len([s for s in ours.scopes if s["name"].startswith("uuser-")]) != users:
            raise RuntimeError("V1's config dump does not hold every user's scope")
        if "V1" in names:
            measured.append(Instance("V1", 0, proxy_port, live))
        else:
            await live.close()
            await stack.stop()
            stack = None
        for name in names:
            if name in ("V0", "V1"):
                continue
            for index in range(instances):
                port = free_port()
                folder = Path(workdir) / f"{name}.{index}"
                folder.mkdir()
                where = Where(name, folder, server)
                if name in DROPS:
                    config = replay_bootstrap(ours, port, where, DROPS[name])
                else:
                    config = parts_bootstrap(PARTS[name], ours, bound, pod_ports, port, where)
                process = envoy(config, start_timeout_s=180)
                await up(process)
                url = f"http://127.0.0.1:{port}/"
                if name == "V7":  # every request to pod 0
                    await check(url, dict.fromkeys(uids[-50:], 0), by_pod=True)
                else:
                    by_pod = name in DROPS or PARTS[name].subset is not None
                    await check(url, bound, by_pod=by_pod)
                measured.append(Instance(name, index, port, process))
        print(
            f"  {len(measured)} Envoys up and routing ({time.perf_counter() - started:.0f} s); "
            f"load average {load_average()}",
            flush=True,
        )
        assert plain.process is not None
        plain_pid = plain.process.pid
        for index in range(rounds):
            for instance in measured:
                result = await pair(
                    (plain_port, plain_pid),
                    (instance.port, instance.pid),
                    uids,
                    seconds,
                    connections,
                )
                instance.rounds.append(result)
                print(
                    f"  round {index + 1} {instance.name:>6}.{instance.index}: plain "
                    f"{result.plain_rps:6,.0f} req/s {result.plain_us:5.2f} us/req | variant "
                    f"{result.rps:6,.0f} req/s {result.us:5.2f} us/req | {result.ratio:.3f}x | "
                    f"core {result.core_busy:.2f}",
                    flush=True,
                )
            print(f"  (after round {index + 1}: load average {load_average()})", flush=True)
        report(measured)
    finally:
        for process in reversed(processes):
            await process.close()
        if stack is not None:
            await stack.stop()
        await server.stop()
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    print(
        f"\n{time.perf_counter() - started:.0f} s in all; load average {load_average()} "
        f"(nproc {os.cpu_count()})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="per instance")
    parser.add_argument("--seconds", type=float, default=3.0, help="per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--instances", type=int, default=3, help="Envoy processes per variant (V1: one)"
    )
    parser.add_argument(
        "--variants", default=",".join(DEFAULT_VARIANTS), help=f"of {','.join(ALL_VARIANTS)}"
    )
    args = parser.parse_args()
    names = [n for n in args.variants.split(",") if n]
    unknown = set(names) - set(ALL_VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {sorted(unknown)}")
    asyncio.run(run(args.users, args.rounds, args.seconds, args.connections, names, args.instances))


if __name__ == "__main__":
    main()
