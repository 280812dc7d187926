"""`doctor`: documented endpoints only, and each failed check names what it found (status,
host) and the fix that matches it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from connector.faces.doctor import run_checks
from connector.state.store import Store
from sandbox import Sandbox, generate
from tests.e2e import settings_for

pytestmark = pytest.mark.e2e  # the connector against the sandbox over HTTP


@pytest.fixture
def box() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        generate(sandbox.kantata, seed=91, invoices=3)
        yield sandbox


def _doctor(box: Sandbox, tmp_path: Path, **extra: Any) -> tuple[bool, str]:
    settings = settings_for(box, tmp_path, kantata_sync_http_max_attempts=1, **extra)
    Store(settings.kantata_sync_database_url).close()
    console = Console(record=True, width=400, color_system=None)
    ok = run_checks(settings, console)
    return ok, console.export_text()


def test_a_good_setup_passes_using_documented_endpoints_only(box: Sandbox, tmp_path: Path) -> None:
    ok, out = _doctor(box, tmp_path)
    assert ok, out
    noko = set(box.noko.state()["stats"]["requests"])
    assert noko == {"GET /invoices"}, noko  # not /current_user (documented as not implemented)
    kantata = set(box.kantata.state()["stats"]["requests"])
    assert kantata <= {"GET /users/me", "GET /invoices"}, kantata
    assert "clock within" in out


def test_a_wrong_kantata_base_url_is_not_called_a_bad_token(box: Sandbox, tmp_path: Path) -> None:
    ok, out = _doctor(box, tmp_path, kantata_base_url=box.kantata_url + "/wrong")
    assert not ok
    assert "answered 404 Not Found" in out
    assert "KANTATA_BASE_URL" in out
    assert "refused the token" not in out
    assert "OAuth token" not in out


def test_an_unreachable_host_is_named(box: Sandbox, tmp_path: Path) -> None:
    ok, out = _doctor(box, tmp_path, kantata_base_url="http://127.0.0.1:9/api/v1")
    assert not ok
    assert "could not reach Kantata at 127.0.0.1:9" in out
    assert "127.0.0.1:9 can be reached" in out


def test_a_refused_token_says_so(box: Sandbox, tmp_path: Path) -> None:
    ok, out = _doctor(box, tmp_path, noko_token="wrong-token")
    assert not ok
    assert "Noko at" in out and "refused the token (HTTP 401)" in out
    assert "NOKO_TOKEN" in out


def test_no_token_set_gives_no_network_hint(box: Sandbox, tmp_path: Path) -> None:
    ok, out = _doctor(box, tmp_path, kantata_token=None, noko_token=None)
    assert not ok
    assert "KANTATA_TOKEN is not set" in out and "NOKO_TOKEN is not set" in out
    assert "network" not in out.lower()
