"""deploy/kubernetes/, checked offline: no cluster runs here.

Every object is validated against the Kubernetes JSON schemas of the oldest and the newest
version we claim (strict: an unknown field is an error), from the ``kubernetes-validate``
package, which bundles the schemas of each Kubernetes release. Then what the schemas cannot
see: the objects name each other correctly, the control plane's config (from the ConfigMap)
loads and agrees with Envoy's bootstrap beside it, and the real Envoy accepts that bootstrap.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from controlplane.runtime.demo_pod import TOKEN_ENV
from controlplane.runtime.envoy import XDS_CLUSTER
from controlplane.settings import Settings
from tests.support.envoy_validate import assert_envoy_accepts

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate (the test extra) bundles the schemas"
)

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
NAMESPACE = "stateful-route"
# The oldest Kubernetes the manifests claim (docs/deploy.md) and the newest with schemas here.
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]


def load_objects() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, document)
        for path in sorted(MANIFESTS.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


OBJECTS = load_objects()


def named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for _, o in OBJECTS if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, obj in OBJECTS:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            yield obj["metadata"]["name"], obj["spec"]["template"]


def containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    found: list[dict[str, Any]] = spec.get("initContainers", []) + spec["containers"]
    return found


def container(template: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in template["spec"]["containers"] if c["name"] == name]
    return found


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("source", "obj"),
    OBJECTS,
    ids=[f"{source}:{o['kind']}/{o['metadata']['name']}" for source, o in OBJECTS],
)
def test_every_object_is_valid_kubernetes(source: str, obj: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{source}: {obj['kind']}/{obj['metadata']['name']}: {error.message}")


def test_the_stack_is_all_there_in_one_namespace() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for _, o in OBJECTS}
    assert {
        ("Namespace", NAMESPACE),
        ("Secret", "stateful-route-token"),
        ("ConfigMap", "stateful-route-config"),
        ("StatefulSet", "redis"),
        ("Deployment", "stateful-route-gateway"),
        ("StatefulSet", "echo"),
        ("Service", "stateful-route"),
        ("Service", "stateful-route-admin"),
    } <= kinds
    assert [k for k in kinds if k[0] == "PodDisruptionBudget"]
    for _, obj in OBJECTS:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
    # `kubectl apply -f` takes the files in name order: the namespace comes first.
    assert OBJECTS[0][1]["kind"] == "Namespace"


def test_services_and_budgets_select_pods_that_exist_on_ports_they_name() -> None:
    templates = dict(pod_templates())
    for _, obj in OBJECTS:
        if obj["kind"] not in ("Service", "PodDisruptionBudget"):
            continue
        spec = obj["spec"]
        selector = spec["selector"] if obj["kind"] == "Service" else spec["selector"]["matchLabels"]
        chosen = [
            t for t in templates.values() if selector.items() <= t["metadata"]["labels"].items()
        ]
        assert chosen, f"{obj['kind']}/{obj['metadata']['name']} selects no pod"
        ports = {p["name"] for t in chosen for c in containers(t) for p in c.get("ports", [])}
        for port in spec.get("ports", []):
            assert port["targetPort"] in ports, obj["metadata"]["name"]
    for name, workload in [(o["metadata"]["name"], o) for _, o in OBJECTS]:
        if workload["kind"] in ("Deployment", "StatefulSet"):
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items(), name


def test_every_container_asks_for_resources_and_none_carries_the_token_in_argv() -> None:
    secret = named("Secret", "stateful-route-token")
    assert len(secret["stringData"]["token"]) >= 16  # what the admin API accepts
    for name, template in pod_templates():
        for each in containers(template):
            requests = each["resources"]["requests"]
            assert {"cpu", "memory"} <= requests.keys(), f"{name}/{each['name']}"
            argv = " ".join(each.get("command", []) + each.get("args", []))
            assert "--token" not in argv
            for variable in each.get("env", []):
                if "TOKEN" in variable["name"]:
                    ref = variable["valueFrom"]["secretKeyRef"]
                    assert (ref["name"], ref["key"]) == ("stateful-route-token", "token")


def test_the_demo_service_is_a_statefulset_whose_pods_report_with_the_token() -> None:
    echo = named("StatefulSet", "echo")
    template = echo["spec"]["template"]
    assert echo["spec"]["serviceName"] == "echo"
    headless = named("Service", "echo")["spec"]
    assert headless["clusterIP"] == "None"
    # Names resolve while the pods exist: the control plane's checks judge readiness.
    assert headless["publishNotReadyAddresses"] is True
    pod = container(template, "echo")
    assert '--index "${POD_NAME##*-}"' in pod["command"][-1]  # the ordinal is the pod index
    assert {v["name"] for v in pod["env"]} >= {"POD_NAME", TOKEN_ENV}
    assert "initContainers" not in template["spec"]  # nothing registers itself
    assert pod["readinessProbe"]["httpGet"]["path"] == "/health"


@pytest.fixture(scope="module")
def config() -> dict[str, str]:
    data: dict[str, str] = named("ConfigMap", "stateful-route-config")["data"]
    return data


@pytest.fixture(scope="module")
def settings(config: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    path = tmp_path_factory.mktemp("config") / "controlplane.yaml"
    path.write_text(config["controlplane.yaml"])
    with pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("STATEFUL_ROUTE_")]:
            env.delenv(name)
        return Settings.load(path)


@pytest.fixture(scope="module")
def bootstrap(config: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(config["envoy.yaml"])
    return data


def test_envoy_and_its_control_plane_share_the_event_log_and_the_pods_loopback(
    settings: Settings, bootstrap: dict[str, Any]
) -> None:
    gateway = named("Deployment", "stateful-route-gateway")
    assert gateway["spec"]["replicas"] >= 2  # control-plane replicas share Redis
    template = gateway["spec"]["template"]
    controlplane, envoy = container(template, "controlplane"), container(template, "envoy")
    # The outlier event log, on an emptyDir both mount.
    log = bootstrap["cluster_manager"]["outlier_detection"]["event_log_path"]
    assert settings.signals.outlier_event_log == Path(log)
    directory = str(Path(log).parent)
    mounted = [
        {m["mountPath"]: m["name"] for m in c["volumeMounts"]} for c in (controlplane, envoy)
    ]
    assert mounted[0][directory] == mounted[1][directory]
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == mounted[0][directory]]
    assert "emptyDir" in volume
    # xDS and the miss path over the loopback; Envoy's admin on the loopback only.
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == XDS_CLUSTER]
    (group,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = group["lb_endpoints"]
    socket = endpoint["endpoint"]["address"]["socket_address"]
    assert (socket["address"], socket["port_value"]) == ("127.0.0.1", settings.listen.xds_grpc_port)
    assert settings.xds.miss_path_host == "127.0.0.1"
    admin = bootstrap["admin"]["address"]["socket_address"]
    assert admin["address"] == "127.0.0.1"
    (url,) = settings.signals.envoy_admin_urls
    assert (urlsplit(url).hostname, urlsplit(url).port) == ("127.0.0.1", admin["port_value"])
    # Probes: the control plane's /healthz, Envoy's /ready (asked from inside the pod). Redis
    # away fails /healthz, so it only gates the start: the pod stays in the proxy Service.
    assert "readinessProbe" not in controlplane
    probe = controlplane["startupProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in controlplane["ports"] + envoy["ports"]}
    assert ports[probe["port"]] == settings.listen.admin_port
    ready = " ".join(envoy["readinessProbe"]["exec"]["command"])
    assert f"127.0.0.1:{admin['port_value']}/ready" in ready
    # The proxy listener is the port the Service sends clients to.
    listener = settings.xds.group(bootstrap["node"]["cluster"])
    assert ports["proxy"] == listener.listener_port
    assert urlsplit(settings.redis.url).hostname == named("Service", "redis")["metadata"]["name"]


def test_one_image_everywhere_but_redis() -> None:
    images = {c["image"] for name, t in pod_templates() if name != "redis" for c in containers(t)}
    assert len(images) == 1, images


def test_the_control_plane_finds_every_echo_pod_by_its_statefulset_name(settings: Settings) -> None:
    echo = named("StatefulSet", "echo")["spec"]
    (service,) = settings.services
    assert (service.namespace, service.name) == ("demo", "echo")
    names = [f"echo-{i}.{echo['serviceName']}" for i in range(echo["replicas"])]
    assert [spec.name for spec in service.pods] == names
    # Each index is the name's ordinal, the index the pod reports its load under.
    assert [spec.pod_index for spec in service.pods] == list(range(echo["replicas"]))
    assert all(spec.host is None and spec.index is None for spec in service.pods)


@pytest.mark.envoy
def test_envoy_accepts_the_bootstrap(bootstrap: dict[str, Any], tmp_path: Path) -> None:
    template = named("Deployment", "stateful-route-gateway")["spec"]["template"]
    command = container(template, "envoy")["command"]
    # The node id is the pod's name, given on the command line.
    assert command[command.index("--service-node") + 1] == "$(POD_NAME)"
    assert_envoy_accepts(bootstrap, tmp_path, "envoy.yaml", "--service-node", "gateway-0")
