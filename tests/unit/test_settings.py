"""Settings come from defaults, a file, the environment and flags, later ones winning."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.errors import InvalidInput
from controlplane.settings import Settings


def test_defaults_listen_on_loopback_only() -> None:
    settings = Settings.load()
    assert settings.listen.host == "127.0.0.1"
    assert settings.redis.prefix == "sr"


def test_environment_beats_the_file_and_flags_beat_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "sr.yaml"
    config.write_text(
        "redis: {url: 'redis://127.0.0.1:7000/0'}\n"
        "listen: {admin_port: 5555}\n"
        "services:\n"
        "  - {namespace: demo, name: echo, pods: [{index: 0, host: 127.0.0.1, port: 8001}]}\n"
    )
    monkeypatch.setenv("STATEFUL_ROUTE_LISTEN__ADMIN_PORT", "6666")
    from_env = Settings.load(config)
    assert from_env.listen.admin_port == 6666
    assert from_env.redis.url == "redis://127.0.0.1:7000/0"
    assert from_env.services[0].pods[0].index == 0
    assert Settings.load(config, listen={"admin_port": 7}).listen.admin_port == 7


def test_toml_files_are_read_too(tmp_path: Path) -> None:
    config = tmp_path / "sr.toml"
    config.write_text('[redis]\nprefix = "blue"\n')
    assert Settings.load(config).redis.prefix == "blue"


@pytest.mark.parametrize("text", ["redis: [unclosed", "- just\n- a list\n"])
def test_a_broken_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    config = tmp_path / "sr.yaml"
    config.write_text(text)
    with pytest.raises(InvalidInput, match=r"sr\.yaml"):
        Settings.load(config)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read"):
        Settings.load(tmp_path / "absent.yaml")
