"""The package as a user installs it: a wheel, not the source tree.

``python -m build`` makes the sdist and, from it, the wheel (so both must carry the package
data); the wheel goes into a fresh virtual environment and ``stateful-route demo`` from there,
run outside the repository, routes a user through Envoy. The wheel is installed without its
dependencies, which the fresh environment reads from this one (a ``.pth`` line): what is tested
is the wheel's own files, offline and in seconds. Envoy comes from PATH (a link to this
environment's binary), as for a user who has Envoy from elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import site
import subprocess
import sys
import tarfile
import urllib.request
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.runtime.envoy import find_envoy_binary
from controlplane.runtime.ports import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.wheel, pytest.mark.envoy, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAPS = ("rest", "ads", "delta", "compose-ads", "ads-tls")
PACKAGED = "controlplane/runtime/bootstraps"
TOKEN = "wheel-test-token-0123456789"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built as ``python -m build`` builds them."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("the 'build' package is not installed (it is in the 'test' extra)")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=150,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 and "build-requirements-" in output:
        # Build isolation installs setuptools from the package index (pip -r
        # build-requirements-*.txt failed): no index, no build.
        why = [line for line in output.splitlines() if "ERROR" in line][:2]
        pytest.skip(f"python -m build could not install its build dependencies: {why}")
    assert result.returncode == 0, output[-5000:]
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("stateful_route-*.whl")
    return found


def test_the_wheel_and_the_sdist_carry_the_envoy_bootstraps(dist: Path, wheel: Path) -> None:
    (sdist,) = dist.glob("stateful_route-*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {name: archive.read(name) for name in archive.namelist()}
    with tarfile.open(sdist) as archive:
        in_sdist = {
            name.split("/", 1)[1]: archive.extractfile(name).read()  # type: ignore[union-attr]
            for name in archive.getnames()
            if name.count("/") and archive.getmember(name).isfile()
        }
    for name in BOOTSTRAPS:
        # envoy/ in the repository is a link to the packaged folder: one copy of each file.
        repository = (REPO / "envoy" / f"{name}.yaml").read_bytes()
        assert in_wheel[f"{PACKAGED}/{name}.yaml"] == repository, name
        assert in_sdist[f"{PACKAGED}/{name}.yaml"] == repository, name
    for data in ("controlplane/xds/misspath.lua", "controlplane/admin/static/dashboard.html"):
        assert data in in_wheel, data


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel; its dependencies are read from this environment."""
    root = tmp_path_factory.mktemp("venv")
    venv.create(root, with_pip=False)
    python = root / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)],
        check=True, timeout=120,
    )  # fmt: skip
    (purelib,) = Path(root, "lib").glob("python3.*/site-packages")
    # After the venv's own entries: the wheel's controlplane comes first. Plain path lines, so
    # this environment's .pth files (its editable install of the repository) are not run.
    (purelib / "zz_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return root


def run_env(installed: Path, tmp_path: Path) -> dict[str, str]:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "envoy").symlink_to(find_envoy_binary())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATEFUL_ROUTE_", "PYTHON"))}
    env["PATH"] = os.pathsep.join([str(installed / "bin"), str(tools), "/usr/bin", "/bin"])
    env.pop("VIRTUAL_ENV", None)
    return env


def test_the_installed_package_is_the_wheel_not_the_source_tree(
    installed: Path, tmp_path: Path
) -> None:
    where = "import controlplane; print(controlplane.__file__)"
    result = subprocess.run(
        [str(installed / "bin" / "python"), "-c", where],
        capture_output=True, text=True, check=True, cwd=tmp_path, env=run_env(installed, tmp_path),
    )  # fmt: skip
    assert Path(result.stdout.strip()).is_relative_to(installed), result.stdout


@pytest.fixture(params=[[], ["--tls"]], ids=["plain", "tls"])
def demo(
    installed: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[int, Path, bool]]:
    """``stateful-route demo`` from the fresh venv, outside the repository; stopped by PID.
    Plain, then with ``--tls`` (its throwaway CA comes from the wheel's own dependencies)."""
    proxy_port, admin_port = free_port(), free_port()
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(installed / "bin" / "stateful-route"), "demo", "--proxy-port", str(proxy_port),
             "--admin-port", str(admin_port), "--token", TOKEN, *request.param],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=tmp_path, env=run_env(installed, tmp_path),
        )  # fmt: skip
    try:
        yield proxy_port, log, bool(request.param)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # the operator's Ctrl-C: it stops what it started
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_a_wheel_installed_demo_routes_a_user_through_envoy(
    demo: tuple[int, Path, bool],
) -> None:
    proxy_port, log, tls = demo

    def ready() -> bool:
        text = log.read_text()
        assert "error:" not in text, text
        return "ready." in text

    wait_until(ready, "the demo's banner", within_s=60)
    if tls:
        assert "CA (throwaway):" in log.read_text()

    def ask() -> dict[str, object]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{proxy_port}/", headers={"x-uid": "alice"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            answer: dict[str, object] = json.loads(response.read())
            return answer

    first, second = ask(), ask()
    assert first["uid"] == second["uid"] == "alice"
    assert first["pod"] == second["pod"]
    assert (first["count"], second["count"]) == (1, 2)
