"""``envoy --mode validate`` on a bootstrap meant for a container (compose, Kubernetes)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml

from controlplane.runtime.envoy import find_envoy_binary


def assert_envoy_accepts(
    config: dict[str, Any], tmp_path: Path, name: str, *args: str, binary: str | None = None
) -> None:
    """The real Envoy (``binary``, else the launcher's) validates ``config`` (and its
    command-line ``args``).

    Validate mode resolves no DNS (container names are fine as they are), but it opens the
    outlier event log, whose directory exists only in the container: it is pointed at tmp_path.
    """
    config = {**config, "cluster_manager": dict(config["cluster_manager"])}
    config["cluster_manager"]["outlier_detection"] = {
        **config["cluster_manager"]["outlier_detection"],
        "event_log_path": str(tmp_path / "outlier-events.log"),
    }
    copy = tmp_path / name
    copy.write_text(yaml.safe_dump(config))
    command = [binary or find_envoy_binary(), "--mode", "validate", "-c", str(copy), *args]
    result = subprocess.run(
        [*command, "--use-dynamic-base-id"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, shlex.join(command) + "\n" + result.stderr[-3000:]
    assert f"configuration '{copy}' OK" in result.stdout + result.stderr
