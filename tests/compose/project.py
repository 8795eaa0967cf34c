"""The repository's docker-compose.yml as one Compose project under a name of its own.

Only the host side of the published ports differs from what a user runs: the engine picks free
ones on 127.0.0.1 (an override file), so the test runs beside a demo or a user's stack on the
default ports. The token comes from the environment, which compose prefers to a ``.env``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKER = ("docker",)


def ports_override() -> str:
    """Compose override text: every published port on an engine-chosen loopback port."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    lines = ["services:"]
    for name, service in services.items():
        if "ports" in service:
            ports = [f"127.0.0.1::{port.rsplit(':', 1)[1]}" for port in service["ports"]]
            lines += [f"  {name}:", f"    ports: !override {json.dumps(ports)}"]
    return "\n".join(lines) + "\n"


class ComposeProject:
    """``docker compose -p NAME -f docker-compose.yml -f <ports override> ...``."""

    def __init__(self, compose: list[str], name: str, workdir: Path, token: str) -> None:
        override = workdir / "ports.override.yml"
        override.write_text(ports_override())
        self.name = name
        self.token = token
        self.command = [
            *compose, "--project-name", name, "--project-directory", str(REPO),
            "--file", str(COMPOSE_FILE), "--file", str(override),
        ]  # fmt: skip
        self.env = {**os.environ, "STATEFUL_ROUTE_TOKEN": token}

    def run(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """One compose command; fails with its output when it exits non-zero."""
        done = subprocess.run(
            [*self.command, *args], capture_output=True, text=True, timeout=timeout_s,
            env=self.env, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"compose {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    def config(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.run("config", "--format", "json").stdout)
        return found

    def address(self, service: str, port: int) -> str:
        """host:port where the engine published ``service``'s ``port``."""
        return self.run("port", service, str(port)).stdout.strip()

    def containers(self) -> dict[str, tuple[str, str]]:
        """Service -> (container ID, image ID) of the project's long-running containers."""
        return {service: (c["Id"], c["Image"]) for service, c in self._inspect().items()}

    def health(self) -> dict[str, str | None]:
        """Service -> its container's health (``healthy``, ...); None: it has no healthcheck."""
        return {
            service: (c["State"].get("Health") or {}).get("Status")
            for service, c in self._inspect().items()
        }

    def _inspect(self) -> dict[str, dict[str, Any]]:
        """Service -> what the engine says of its long-running container."""
        ids = docker(
            "ps", "--all", "--quiet", "--no-trunc",
            "--filter", f"label=com.docker.compose.project={self.name}",
            "--filter", "label=com.docker.compose.oneoff=False",
        ).split()  # fmt: skip
        if not ids:
            return {}
        found = {}
        for container in json.loads(docker("inspect", *ids)):
            found[container["Config"]["Labels"]["com.docker.compose.service"]] = container
        return found

    def leftovers(self) -> list[str]:
        """Containers, volumes and networks of the project still there."""
        label = f"label=com.docker.compose.project={self.name}"
        return [
            *docker("ps", "--all", "--quiet", "--filter", label).split(),
            *docker("volume", "ls", "--quiet", "--filter", label).split(),
            *docker("network", "ls", "--quiet", "--filter", label).split(),
        ]

    def logs(self) -> str:
        done = subprocess.run(
            [*self.command, "logs", "--no-color", "--tail", "40"],
            capture_output=True, text=True, timeout=60, env=self.env, check=False,
        )  # fmt: skip
        return done.stdout + done.stderr


def docker(*args: str, timeout_s: float = 60) -> str:
    done = subprocess.run(
        [*DOCKER, *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout
