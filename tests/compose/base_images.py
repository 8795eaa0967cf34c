"""Local stand-ins for the two base images the compose stack names, for an engine that cannot
pull them (no image registry reachable): ``python:3.11-slim`` and ``redis:7``.

Both are built from one minimal Debian bookworm root (debootstrap from the mirror apt already
uses) holding Python 3.11 and Redis 7, imported into the engine and tagged with the official
names, so Dockerfile and docker-compose.yml build and run unchanged. Only what the project relies
on is reproduced: ``python``/``pip`` on PATH in a venv (pip installs without PEP 668's refusal)
and this machine's certificate bundle for pip inside ``docker build``; ``redis-server`` as the
entry point with protected mode off and ``/data`` as its directory. Existing tags are kept, so a
machine that pulled the real images uses those. Needs root, apt-get and a running engine.

    python -m tests.compose.base_images      # build whichever of the two is missing
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

PYTHON_IMAGE = "python:3.11-slim"
REDIS_IMAGE = "redis:7"
ROOT_IMAGE = "stateful-route-stand-in/debian:bookworm"
SUITE = "bookworm"  # its Python is 3.11, its Redis 7.0
PACKAGES = ("python3", "python3-venv", "ca-certificates", "redis-server", "redis-tools")
LABEL = "stateful-route.stand-in=true"  # `docker image ls -f label=stateful-route.stand-in`

PYTHON_DOCKERFILE = f"""\
FROM {ROOT_IMAGE}
LABEL {LABEL}
COPY host-ca.pem /etc/ssl/certs/host-ca.pem
COPY pip.conf /etc/pip.conf
RUN python3 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    LANG=C.UTF-8
CMD ["python3"]
"""

# The official image's redis-server listens to other containers without a password.
REDIS_ENTRYPOINT = """\
#!/bin/sh
set -e
if [ "$1" = redis-server ]; then
  shift
  exec redis-server "$@" --protected-mode no
fi
exec "$@"
"""

REDIS_DOCKERFILE = f"""\
FROM {ROOT_IMAGE}
LABEL {LABEL}
COPY entrypoint.sh /usr/local/bin/entrypoint.sh
RUN chmod 755 /usr/local/bin/entrypoint.sh && mkdir -p /data
WORKDIR /data
VOLUME /data
EXPOSE 6379
ENTRYPOINT ["entrypoint.sh"]
CMD ["redis-server"]
"""


class CannotBuild(Exception):
    """The stand-ins cannot be built on this machine (the reason is the message)."""


def run(command: Sequence[str], timeout_s: float, **kwargs: object) -> str:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs
    )  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    output: str = result.stdout
    return output


def image_exists(docker: Sequence[str], name: str) -> bool:
    found = subprocess.run(
        [*docker, "image", "inspect", name], capture_output=True, timeout=30, check=False
    )
    return found.returncode == 0


def debian_mirror() -> str:
    """The first Debian archive apt is configured with (deb822 or one-line sources)."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for path in sources:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        text = path.read_text()
        deb822: list[str] = re.findall(r"^URIs:\s*(\S+)", text, re.MULTILINE)
        one_line: list[str] = re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s", text, re.MULTILINE)
        for uri in deb822 + one_line:
            if uri.startswith("http") and "security" not in uri:
                return uri.rstrip("/")
    raise CannotBuild("no Debian archive found in apt's sources")


def ensure_debootstrap() -> str:
    found = shutil.which("debootstrap")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise CannotBuild("debootstrap is missing and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "install", "-y", "-qq", "debootstrap"], timeout_s=300, env=env)
    return shutil.which("debootstrap") or "debootstrap"


def host_certificates() -> Path | None:
    """The CA bundle this machine's pip trusts (it may hold a proxy's own authority)."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def pip_conf(certificates: Path | None) -> str:
    """pip settings for builds in the python stand-in: the CA bundle, and this machine's index
    if it is not the default one (local folders and constraints stay behind)."""
    lines = ["[global]"]
    if certificates is not None:
        lines.append("cert = /etc/ssl/certs/host-ca.pem")
    index = os.environ.get("PIP_INDEX_URL") or subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout.strip()  # fmt: skip
    if index.startswith(("http://", "https://")):
        lines.append(f"index-url = {index}")
    return "\n".join(lines) + "\n"


def build_root(docker: Sequence[str], work: Path) -> None:
    """debootstrap the Debian root and import it into the engine as ``ROOT_IMAGE``."""
    root = work / "root"
    run(
        [ensure_debootstrap(), "--variant=minbase", f"--include={','.join(PACKAGES)}",
         SUITE, str(root), debian_mirror()],
        timeout_s=900,
    )  # fmt: skip
    with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
        imported = subprocess.run(
            [*docker, "import", "-", ROOT_IMAGE],
            stdin=tar.stdout, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    if tar.returncode != 0 or imported.returncode != 0:
        raise RuntimeError(f"importing the Debian root failed: {imported.stderr}")


def build_image(docker: Sequence[str], tag: str, context: Path, files: dict[str, str]) -> None:
    context.mkdir()
    for name, text in files.items():
        (context / name).write_text(text)
    run([*docker, "build", "--quiet", "--tag", tag, str(context)], timeout_s=600)


def ensure_base_images(docker: Sequence[str] = ("docker",)) -> list[str]:
    """Build whichever of ``python:3.11-slim`` and ``redis:7`` the engine lacks; returns the
    tags built (none when both were there)."""
    missing = [tag for tag in (PYTHON_IMAGE, REDIS_IMAGE) if not image_exists(docker, tag)]
    if not missing:
        return []
    if os.geteuid() != 0:
        raise CannotBuild(f"{', '.join(missing)} missing; building stand-ins needs root")
    with tempfile.TemporaryDirectory(prefix="stand-in-images-") as tmp:
        work = Path(tmp)
        try:
            if not image_exists(docker, ROOT_IMAGE):
                build_root(docker, work)
            if PYTHON_IMAGE in missing:
                certificates = host_certificates()
                build_image(
                    docker,
                    PYTHON_IMAGE,
                    work / "python",
                    {
                        "Dockerfile": PYTHON_DOCKERFILE,
                        "host-ca.pem": certificates.read_text() if certificates else "",
                        "pip.conf": pip_conf(certificates),
                    },
                )
            if REDIS_IMAGE in missing:
                build_image(
                    docker,
                    REDIS_IMAGE,
                    work / "redis",
                    {"Dockerfile": REDIS_DOCKERFILE, "entrypoint.sh": REDIS_ENTRYPOINT},
                )
        finally:
            # debootstrap leaves root-owned device nodes the temporary directory may not remove.
            shutil.rmtree(work / "root", ignore_errors=True)
    return missing


if __name__ == "__main__":
    built = ensure_base_images()
    print(f"built {', '.join(built)}" if built else "both base images are there already")
