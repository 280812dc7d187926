"""An upgrade writes nothing: a state file written by the release before the store's columns
became neutral (`tests/fixtures/state/v0.sql`, see `tests/state_v0.py`) is migrated on open, and
the next `sync` against the same sandbox books pushes nothing to Noko, writes nothing to Kantata,
and finds every fingerprint still matching."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from connector.state.schema import HEAD_REVISION
from connector.state.store import Store
from sandbox import Sandbox
from tests.e2e import run_cli, status_json
from tests.state_v0 import books, build, env

FIXTURES = Path(__file__).parent / "fixtures" / "state"

# Old column -> the record's field today.
_KEPT = {
    "status": "status",
    "stage": "stage",
    "reference": "reference",
    "fingerprint": "fingerprint",
    "source_fingerprint": "source_fingerprint",
    "noko_invoice_id": "target_id",
    "noko_url": "target_link",
    "noko_state": "target_state",
    "noko_lines": "target_lines",
    "total_minor": "total_minor",
    "writeback_hash": "writeback_hash",
    "error_kind": "error_kind",
    "attempts": "attempts",
}


@pytest.fixture
def box() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        yield sandbox


def _old_rows(path: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM invoices").fetchall()
    return {row["kantata_id"]: {k: row[k] for k in _KEPT} for row in rows}


def _writes(service: Any) -> dict[str, int]:
    requests: dict[str, int] = service.stats.snapshot()["requests"]
    return {k: v for k, v in requests.items() if not k.startswith("GET ")}


def test_a_state_file_of_the_release_before_upgrades_without_a_write(
    box: Sandbox, tmp_path: Path
) -> None:
    replay = tmp_path / "replay"
    replay.mkdir()
    build(box, replay)
    recorded = json.loads((FIXTURES / "v0.books.json").read_text())
    assert json.loads(json.dumps(books(box))) == recorded

    work = tmp_path / "work"
    work.mkdir()
    # The old file is kept as its SQL text (`sqlite3 v0.db .dump`), made into a file here.
    with sqlite3.connect(work / "state.db") as old:
        old.executescript((FIXTURES / "v0.sql").read_text())
    old.close()
    before = _old_rows(work / "state.db")
    assert {row["status"] for row in before.values()} == {
        "synced",
        "failed",
        "skipped",
        "conflict",
    }
    box.noko.stats.reset()
    box.kantata.stats.reset()

    done = run_cli(["sync"], env(box, work), work)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stdout + done.stderr  # the conflict and the failure stay
    assert _writes(box.noko) == {}
    assert _writes(box.kantata) == {}
    # The quiet cycle: one Kantata page, one Noko poll.
    assert sum(box.noko.stats.snapshot()["requests"].values()) == 1
    assert sum(box.kantata.stats.snapshot()["requests"].values()) == 1

    store = Store(f"sqlite:///{work / 'state.db'}", create=False)
    try:
        for kantata_id, old in before.items():
            record = store.get_invoice(kantata_id)
            assert record is not None
            now = {column: getattr(record, field) for column, field in _KEPT.items()}
            # Target ids are text since 0006: Noko's ints became their decimal strings.
            noko_id = old["noko_invoice_id"]
            assert isinstance(noko_id, int | None)
            old = {**old, "noko_invoice_id": None if noko_id is None else str(noko_id)}
            assert now == old, kantata_id
    finally:
        store.close()
    with sqlite3.connect(work / "state.db") as db:
        kinds = {row[0] for row in db.execute("SELECT typeof(target_id) FROM invoices")}
    db.close()
    assert kinds == {"text", "null"}
    counts = status_json(env(box, work), work)["counts"]
    assert counts["synced"] == 5
    assert counts["conflict"] == 1
    assert counts["skipped"] == 3


def test_the_head_revision_the_store_knows_is_alembics_head() -> None:
    """The store opens a file at `HEAD_REVISION` without Alembic: it must be Alembic's head."""
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("connector.state").joinpath("migrations"))
    )
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_a_file_at_head_opens_without_loading_the_migrations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    Store(url).close()
    probe = (
        "import sys\n"
        "from connector.state.store import Store\n"
        f"Store({url!r}).close()\n"
        "print(sorted(m for m in sys.modules if m.startswith('alembic')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout
