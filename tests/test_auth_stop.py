"""A refused token (401/403) stops the cycle, not the invoices: nothing is marked failed, no
failure is written to Kantata, the cursor stays, and the next sync with a good token goes on."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from connector.faces.app import open_connector
from sandbox import FaultConfig, Sandbox, generate
from tests.e2e import check_books, cli_env, run_cli, settings_for, status_json


def _failed_references(box: Sandbox) -> list[str]:
    return [
        str(inv["id"])
        for inv in box.kantata.state()["invoices"]
        for ref in inv.get("external_references", [])
        if ref.get("status") == "failed"
    ]


def test_noko_401_mid_cycle_stops_the_cycle_and_the_next_sync_finishes(
    box: Sandbox, tmp_path: Path
) -> None:
    generate(box.kantata, seed=51, invoices=25, draft_rate=0, cancelled_rate=0)
    env = cli_env(box, tmp_path, KANTATA_SYNC_WORKERS="4")
    box.noko.set_faults(FaultConfig(auth_fail_after=30))
    done = run_cli(["sync"], env, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "Noko refused the token (HTTP 401)" in lines[0]
    assert "NOKO_TOKEN" in lines[0]
    assert "Traceback" not in done.stderr

    report = status_json(env, tmp_path)
    assert report["counts"]["failed"] == 0, report["failures"]
    assert report["failures"] == []
    assert report["cursor"] is None  # the cursor did not move
    assert _failed_references(box) == []
    with sqlite3.connect(tmp_path / "state.db") as db:
        errors = db.execute("SELECT count(*) FROM invoices WHERE last_error IS NOT NULL").fetchone()
    assert errors == (0,)

    box.noko.set_faults(None)  # the token is fixed
    again = run_cli(["sync"], env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    books = check_books(box)
    assert books.problems == []
    assert books.eligible == 25


def test_kantata_401_on_write_back_leaves_invoices_for_the_next_cycle(
    box: Sandbox, tmp_path: Path
) -> None:
    """Pushed to Noko, then Kantata refuses the token on the write-back: not a failure; the
    next cycle writes the references, and nothing is created twice."""
    generate(box.kantata, seed=52, invoices=12, draft_rate=0, cancelled_rate=0)
    box.kantata.set_faults(
        FaultConfig(auth_fail_after=1, only_paths=("/api/v1/external_references/",))
    )
    with open_connector(settings_for(box, tmp_path, kantata_sync_workers=2)) as c:
        first = c.engine.run_cycle()
        assert first.outcome == "aborted"
        assert first.error is not None and first.error.startswith("Kantata refused the token")
        assert "KANTATA_TOKEN" in first.error
        assert first.exit_code == 1
        assert first.failed == {}
        assert first.cursor_after is None
        assert c.store.counts().get("failed", 0) == 0
        box.kantata.set_faults(None)
        second = c.engine.run_cycle()
        assert second.exit_code == 0, second.failed
    assert check_books(box).problems == []
    assert box.noko.state()["invoices"].__len__() == 12


def test_a_refused_token_stops_the_workers_taking_new_invoices(
    box: Sandbox, tmp_path: Path
) -> None:
    """From the first 401 on, no invoice is started: Noko sees few requests after it."""
    generate(box.kantata, seed=53, invoices=60, draft_rate=0, cancelled_rate=0)
    box.noko.set_faults(FaultConfig(auth_fail_after=0))
    with open_connector(settings_for(box, tmp_path, kantata_sync_workers=4)) as c:
        result = c.engine.run_cycle()
    assert result.outcome == "aborted"
    refused = box.noko.state()["stats"]["statuses"].get("401", 0)
    # About one refused request per worker in flight (401 is final, never retried; a create
    # refused looks its invoice up once): not one per invoice of the 60.
    assert 1 <= refused <= 2 * 4, json.dumps(box.noko.state()["stats"])
    assert result.counts["stopped"] + result.counts["pushed"] >= 1


def test_reconcile_with_a_refused_token_is_one_line(box: Sandbox, tmp_path: Path) -> None:
    generate(box.kantata, seed=54, invoices=3, draft_rate=0, cancelled_rate=0)
    env = cli_env(box, tmp_path)
    assert run_cli(["sync"], env, tmp_path).returncode == 0
    done = run_cli(["reconcile"], {**env, "NOKO_TOKEN": "revoked-token"}, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "kantata-sync: Noko refused the token (HTTP 401): check NOKO_TOKEN" in done.stderr
