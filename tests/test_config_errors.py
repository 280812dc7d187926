"""Configuration errors name their source as the operator wrote it; usage errors are one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connector.errors import ConfigError
from connector.faces.config import load_settings
from tests.e2e import run_cli

pytestmark = pytest.mark.e2e  # the CLI in a subprocess


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_an_unknown_key_in_the_file_is_named_as_in_the_file(tmp_path: Path) -> None:
    path = _file(tmp_path, "[sync]\nintervall = 30\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    assert f"[sync] intervall in {path}: unknown setting" in message
    assert "KANTATA_SYNC_INTERVALL" not in message


def test_an_invalid_environment_variable_is_not_blamed_on_the_file(tmp_path: Path) -> None:
    path = _file(tmp_path, "[sync]\ninterval = 30\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={"KANTATA_SYNC_WORKERS": "many"})
    message = str(info.value)
    assert "KANTATA_SYNC_WORKERS (environment)" in message
    assert str(path) not in message


def test_an_invalid_value_in_the_file_names_the_file_key(tmp_path: Path) -> None:
    path = _file(tmp_path, '[noko]\nburst = "lots"\n')
    with pytest.raises(ConfigError, match=r"\[noko\] burst in .*config.toml"):
        load_settings(path, environ={})


def test_a_check_of_several_settings_names_where_the_value_came_from(tmp_path: Path) -> None:
    path = _file(tmp_path, '[kantata]\nbase_url = "http://kantata.example.com/api/v1"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert f"[kantata] base_url in {path} uses plain http" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"KANTATA_BASE_URL": "http://kantata.example.com/api/v1"})
    assert "KANTATA_BASE_URL (environment) uses plain http" in str(info.value)


@pytest.mark.parametrize(
    "args",
    [["status", "--bogus"], ["nosuch"], ["backfill", "--since", "yesterday"], ["show"]],
)
def test_usage_errors_are_one_line(tmp_path: Path, args: list[str]) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    done = run_cli(args, env, tmp_path, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("kantata-sync: ")
    assert not any(ch in done.stderr for ch in "╭│╰")


@pytest.mark.parametrize(
    "name",
    ["KANTATA_SYNC_INTERVAL", "KANTATA_SYNC_LOOKBACK_SECONDS", "KANTATA_SYNC_RETRY_MAX_DELAY"],
)
def test_endless_numbers_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} \\(environment\\): .*finite"):
        load_settings(None, environ={name: "inf"})
