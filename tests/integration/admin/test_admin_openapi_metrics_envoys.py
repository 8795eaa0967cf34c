"""The API's self-description (/openapi.json, /docs, docs/api.md), /metrics and /api/v1/envoys."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from admin_support import BASE, Client, expect, given_service, route
from pydantic import BaseModel
from pytest_aiohttp import AiohttpClient

from controlplane.admin import AdminMetrics, AdminSettings, create_admin_app
from controlplane.admin.openapi import PATH_PARAMETERS, build_openapi, render_markdown
from controlplane.domain import names
from controlplane.manager import StatefulRouteManager

REPO = Path(__file__).resolve().parents[3]
SERVICE_PATH = "/api/v1/services/{namespace}/{service}"
EXPECTED = {
    "/": {"get"},
    "/healthz": {"get"},
    "/metrics": {"get"},
    "/openapi.json": {"get"},
    "/docs": {"get"},
    "/api/v1/services": {"get"},
    SERVICE_PATH: {"put", "delete"},
    SERVICE_PATH + "/pods": {"get", "post"},
    SERVICE_PATH + "/pods/{index}": {"delete"},
    SERVICE_PATH + "/pods/{index}/users": {"get"},
    SERVICE_PATH + "/pods/{index}/load": {"post"},
    SERVICE_PATH + "/pods/{index}/drain": {"post"},
    SERVICE_PATH + "/pods/{index}/recover": {"post"},
    SERVICE_PATH + "/pods/{index}/fail": {"post"},
    SERVICE_PATH + "/pods/{index}/lease": {"delete"},
    SERVICE_PATH + "/leases": {"post"},
    SERVICE_PATH + "/users/{uid}": {"get", "put", "delete"},
    SERVICE_PATH + "/failovers": {"get"},
    "/api/v1/route": {"post"},
    "/api/v1/envoys": {"get"},
}


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(value) for value in node))
    return set()


async def test_openapi_document_describes_every_operation(api: Client) -> None:
    doc = await expect(await api.get("/openapi.json"), 200)
    assert doc["openapi"].startswith("3.1")
    assert {"title", "version"} <= doc["info"].keys()
    assert {path: set(ops) for path, ops in doc["paths"].items()} == EXPECTED
    for path, ops in doc["paths"].items():
        declared = set(re.findall(r"{(\w+)}", path))
        for op in ops.values():
            assert op["responses"], path
            in_path = {p["name"] for p in op.get("parameters", ()) if p["in"] == "path"}
            assert in_path == declared, path


async def test_openapi_schemas_come_from_the_models_and_every_ref_resolves(api: Client) -> None:
    doc = await expect(await api.get("/openapi.json"), 200)
    schemas = doc["components"]["schemas"]
    assert {"ServiceSettings", "RouteRequest", "RouteResult", "PodStatus", "ErrorBody"} <= set(
        schemas
    )
    assert "service" in schemas["RouteRequest"]["properties"]  # the alias clients send
    for ref in refs(doc):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


async def test_openapi_marks_mutations_as_needing_the_bearer_token(api: Client) -> None:
    doc = await expect(await api.get("/openapi.json"), 200)
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for ops in doc["paths"].values():
        for method, op in ops.items():
            if method != "get":
                assert op["security"] == [{"bearer": []}]
                assert "401" in op["responses"]


def test_names_in_paths_and_bodies_are_described_by_the_domain_rules() -> None:
    route = build_openapi()["components"]["schemas"]["RouteRequest"]["properties"]
    for name, rules in (
        ("namespace", names.NAME_SCHEMA),
        ("service", names.NAME_SCHEMA),
        ("uid", names.UID_SCHEMA),
    ):
        assert PATH_PARAMETERS[name][1] == rules
        assert {key: route[name][key] for key in rules} == rules


async def test_docs_page_lists_every_operation_and_loads_nothing_from_elsewhere(
    api: Client,
) -> None:
    response = await api.get("/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    for path in EXPECTED:
        assert path in page
    assert "<script" not in page
    assert not re.search(r"(src|href)=\"https?:", page)


def test_docs_api_md_is_the_generated_reference_of_the_current_api() -> None:
    # Regenerate with: python -m controlplane.admin > docs/api.md
    assert (REPO / "docs" / "api.md").read_text() == render_markdown(build_openapi())


async def test_metrics_after_routing_show_outcomes_bound_users_and_latency(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=2)
    for uid in ("alice", "bob", "alice"):
        await route(api, uid)
    await api.post("/api/v1/route", json={"namespace": "no", "service": "such", "uid": "x"})
    response = await api.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    assert 'stateful_route_route_requests_total{outcome="new_binding"} 2.0' in text
    assert 'stateful_route_route_requests_total{outcome="bound"} 1.0' in text
    assert 'stateful_route_route_requests_total{outcome="unknown_service"} 1.0' in text
    assert "stateful_route_route_seconds_count 4.0" in text
    bound = re.findall(
        r'stateful_route_bound_users{namespace="games",pod="(\d)",service="lobby"} (\S+)', text
    )
    assert sorted(pod for pod, _ in bound) == ["0", "1"]
    assert sum(float(users) for _, users in bound) == 2
    for name in ("redis_errors_total", "failovers_total", "migrations_total"):
        assert f"# TYPE stateful_route_{name} counter" in text


async def test_metrics_count_failovers_and_migrations(
    api: Client, manager: StatefulRouteManager
) -> None:
    await given_service(manager, pods=3)
    await expect(await api.put(f"{BASE}/users/alice", json={"pod": 0}), 200)
    await expect(await api.put(f"{BASE}/users/alice", json={"pod": 0}), 200)  # no move
    await expect(await api.post(f"{BASE}/pods/0/fail"), 200)
    text = await (await api.get("/metrics")).text()
    labels = '{namespace="games",service="lobby"}'
    assert f"stateful_route_migrations_total{labels} 1.0" in text
    assert f"stateful_route_failovers_total{labels} 1.0" in text
    assert f"stateful_route_failover_moved_users_total{labels} 1.0" in text


async def test_xds_counters_are_served_from_the_metrics_object_the_xds_server_shares(
    aiohttp_client: AiohttpClient, manager: StatefulRouteManager
) -> None:
    metrics = AdminMetrics()
    metrics.xds_pushed("type.googleapis.com/envoy.config.cluster.v3.Cluster")
    metrics.xds_replied("type.googleapis.com/envoy.config.cluster.v3.Cluster", accepted=True)
    metrics.xds_replied(
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", accepted=False
    )
    client = await aiohttp_client(create_admin_app(manager, AdminSettings(), metrics=metrics))
    text = await (await client.get("/metrics")).text()
    assert 'stateful_route_xds_pushes_total{type="Cluster"} 1.0' in text
    assert 'stateful_route_xds_acks_total{type="Cluster"} 1.0' in text
    assert 'stateful_route_xds_nacks_total{type="RouteConfiguration"} 1.0' in text


async def test_envoys_is_empty_when_no_xds_server_is_wired_in(api: Client) -> None:
    assert await expect(await api.get("/api/v1/envoys"), 200) == []


class EnvoyNode(BaseModel):
    node_id: str
    cluster: str


@pytest.fixture(params=["sync", "async"])
async def with_envoys(
    request: pytest.FixtureRequest, aiohttp_client: AiohttpClient, manager: StatefulRouteManager
) -> Client:
    found: list[EnvoyNode | dict[str, str]] = [
        EnvoyNode(node_id="envoy-1", cluster="edge"),
        {"node_id": "envoy-2"},
    ]

    def sync_view() -> list[EnvoyNode | dict[str, str]]:
        return found

    async def async_view() -> list[EnvoyNode | dict[str, str]]:
        return found

    view = sync_view if request.param == "sync" else async_view
    return await aiohttp_client(create_admin_app(manager, AdminSettings(), envoys_view=view))


async def test_envoys_lists_what_the_xds_view_reports(with_envoys: Client) -> None:
    assert await expect(await with_envoys.get("/api/v1/envoys"), 200) == [
        {"node_id": "envoy-1", "cluster": "edge"},
        {"node_id": "envoy-2"},
    ]
