"""The real CLI, in its own process, against the sandbox over HTTP on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector.state.store import Store
from sandbox import Sandbox, generate
from tests.e2e import KANTATA_TOKEN, NOKO_TOKEN, check_books, cli_env, run_cli, status_json


def _writes(box: Sandbox) -> tuple[int, int]:
    """(Kantata write requests, Noko write requests) received so far."""
    kantata = box.kantata.state()["stats"]["writes"]
    noko = box.noko.state()["stats"]["writes"]
    return len(kantata), len(noko)


def test_sync_puts_every_eligible_invoice_in_noko_once_and_second_sync_writes_nothing(
    box: Sandbox, tmp_path: Path
) -> None:
    """A first sync books every eligible invoice to the cent; a second one writes nothing."""
    generate(box.kantata, seed=11, invoices=60, same_updated_at=30)
    env = cli_env(box, tmp_path)
    first = run_cli(["sync"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    books = check_books(box)
    assert books.problems == []
    assert books.eligible > 40
    assert books.noko_invoices == books.eligible
    writes_before = _writes(box)
    second = run_cli(["sync"], env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert _writes(box) == writes_before
    report = status_json(env, tmp_path)
    assert report["counts"]["synced"] == books.eligible
    assert report["counts"]["failed"] == 0
    assert report["failures"] == []
    assert report["cursor"] is not None


def test_write_back_sends_only_the_reference(box: Sandbox, tmp_path: Path) -> None:
    """Kantata write-backs are the documented reference upsert and write no invoice field or
    id list (they used to be a nested reference in `PUT /invoices/{id}`)."""
    generate(box.kantata, seed=12, invoices=15)
    done = run_cli(["sync"], cli_env(box, tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr
    writes = box.kantata.state()["stats"]["writes"]
    assert writes
    for write in writes:
        assert (write["method"], write["template"]) == (
            "POST",
            "/external_references/create_or_update",
        )
        body = write["body"]
        assert list(body) == ["external_reference"], body
        assert body["external_reference"]["subject_type"] == "Invoice"


def test_bad_invoice_fails_alone_with_a_named_field(box: Sandbox, tmp_path: Path) -> None:
    """An invoice with a malformed amount fails with its id and field; the others sync."""
    generate(box.kantata, seed=13, invoices=10)
    ids = box.kantata.invoice_ids()
    victim = next(
        i
        for i in ids
        if not box.kantata.invoice_state(i)["draft"]
        and box.kantata.invoice_state(i)["status"] != "cancelled"
    )
    box.kantata.corrupt_line(victim, "amount_in_cents", "12.5")
    env = cli_env(box, tmp_path)
    done = run_cli(["sync"], env, tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    report = status_json(env, tmp_path)
    failed = {f["kantata_invoice_id"]: f for f in report["failures"]}
    assert str(victim) in failed
    assert "amount_in_cents" in failed[str(victim)]["error"]
    assert f"invoice {victim}" in failed[str(victim)]["error"]
    books = check_books(box)
    assert [p for p in books.problems if not p.startswith(f"{victim}:")] == []
    refs = box.kantata.external_references(victim)
    assert refs
    assert refs[0]["status"] == "failed"
    assert "amount_in_cents" in refs[0]["external_message"]


@pytest.mark.e2e  # the CLI in a subprocess
def test_config_error_exits_2_with_one_line(tmp_path: Path) -> None:
    """A bad setting stops the CLI at start with exit 2 and one readable line."""
    env = {
        "PATH": "/usr/bin:/bin",
        "NOKO_MAX_REQUESTS_PER_SECOND": "fast",
        "KANTATA_TOKEN": "x",
        "NOKO_TOKEN": "y",
    }
    done = run_cli(["sync"], env, tmp_path)
    assert done.returncode == 2
    assert "NOKO_MAX_REQUESTS_PER_SECOND" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_missing_token_exits_2(box: Sandbox, tmp_path: Path) -> None:
    """Without a Noko token the sync refuses to start and says which setting is missing."""
    env = cli_env(box, tmp_path)
    del env["NOKO_TOKEN"]
    done = run_cli(["sync"], env, tmp_path)
    assert done.returncode == 2
    assert "NOKO_TOKEN" in done.stderr


def test_tokens_never_reach_logs_or_database(box: Sandbox, tmp_path: Path) -> None:
    """Neither token appears on stdout, stderr, or in the state database file."""
    generate(box.kantata, seed=14, invoices=8)
    env = cli_env(box, tmp_path, KANTATA_SYNC_LOG_LEVEL="debug")
    outputs = [run_cli(["sync"], env, tmp_path), run_cli(["status", "--json"], env, tmp_path)]
    blob = (tmp_path / "state.db").read_bytes()
    for token in (KANTATA_TOKEN, NOKO_TOKEN):
        for done in outputs:
            assert token not in done.stdout
            assert token not in done.stderr
        assert token.encode() not in blob
    assert (tmp_path / "state.db").stat().st_mode & 0o077 == 0


@pytest.mark.e2e  # the CLI in a subprocess
def test_status_json_on_an_empty_database(tmp_path: Path) -> None:
    """`status --json` works on a state file no sync has written to yet and prints exactly one
    JSON document. (A state file that does not exist at all is an error: status never creates
    one, see tests/test_state_file.py.)"""
    env = {"PATH": "/usr/bin:/bin", "KANTATA_SYNC_DATABASE_URL": f"sqlite:///{tmp_path}/s.db"}
    Store(env["KANTATA_SYNC_DATABASE_URL"]).close()
    done = run_cli(["status", "--json"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"]["synced"] == 0
    assert report["cursor"] is None
    assert report["failures"] == []


def test_backfill_never_moves_cursor_backwards(box: Sandbox, tmp_path: Path) -> None:
    """A backfill of an old window syncs it and leaves the newer cursor where it was."""
    generate(box.kantata, seed=15, invoices=20)
    env = cli_env(box, tmp_path)
    assert run_cli(["sync"], env, tmp_path).returncode == 0
    cursor = status_json(env, tmp_path)["cursor"]
    done = run_cli(["backfill", "--since", "2000-01-01", "--until", "2000-12-31"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert status_json(env, tmp_path)["cursor"] == cursor
    bad = run_cli(["backfill", "--since", "yesterday"], env, tmp_path)
    assert bad.returncode == 2


def test_backfill_since_a_future_day_is_refused(box: Sandbox, tmp_path: Path) -> None:
    """`--since` a day still to come: one clear line, exit 2, nothing read, cursor untouched."""
    generate(box.kantata, seed=17, invoices=5)
    env = cli_env(box, tmp_path)
    assert run_cli(["sync"], env, tmp_path).returncode == 0
    cursor = status_json(env, tmp_path)["cursor"]
    box.kantata.reset_stats()
    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    done = run_cli(["backfill", "--since", tomorrow], env, tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"kantata-sync: --since {tomorrow} is in the future (UTC): there is nothing to backfill yet"
    ]
    assert "Traceback" not in done.stderr
    assert box.kantata.stats.snapshot()["total"] == 0
    assert status_json(env, tmp_path)["cursor"] == cursor


def test_sigterm_during_run_exits_zero_and_next_start_continues(
    box: Sandbox, tmp_path: Path
) -> None:
    """SIGTERM stops the daemon with exit 0; a later sync completes without duplicates."""
    generate(box.kantata, seed=16, invoices=40)
    env = cli_env(box, tmp_path, NOKO_MAX_REQUESTS_PER_SECOND="40", NOKO_BURST="2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector.faces.cli", "run", "--interval", "60"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the first cycle is under way
        line = proc.stderr.readline()
        if not line or "pushed to Noko" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    done = run_cli(["sync"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert check_books(box).problems == []


def test_retry_and_show(box: Sandbox, tmp_path: Path) -> None:
    """`show` prints both sides' ids; `retry` of a synced invoice changes nothing."""
    generate(box.kantata, seed=17, invoices=6)
    env = cli_env(box, tmp_path)
    assert run_cli(["sync"], env, tmp_path).returncode == 0
    synced = next(i for i in box.kantata.invoice_ids() if box.kantata.external_references(i))
    shown = run_cli(["show", str(synced)], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"Kantata invoice {synced}: synced" in shown.stdout
    assert "KS-" in shown.stdout
    writes = _writes(box)
    again = run_cli(["retry", str(synced)], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert _writes(box) == writes
    assert run_cli(["retry", "abc"], env, tmp_path).returncode == 2


def test_logs_are_json_lines_with_run_and_invoice_ids(box: Sandbox, tmp_path: Path) -> None:
    """Off a terminal every log line is JSON with the run id; push lines name both invoices."""
    generate(box.kantata, seed=18, invoices=6, draft_rate=0, cancelled_rate=0)
    done = run_cli(["sync"], cli_env(box, tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert lines
    run_ids = {line.get("run_id") for line in lines}
    assert len(run_ids) == 1
    assert None not in run_ids
    pushes = [line for line in lines if line["event"] == "pushed to Noko"]
    assert len(pushes) == 6
    assert all(p["kantata_invoice_id"] and p["target_invoice_id"] for p in pushes)


def test_sync_against_pages_capped_at_100_books_every_invoice(box: Sandbox, tmp_path: Path) -> None:
    """Kantata serving 100 invoices a page (per_page=200 asked for) with a page_count
    computed for 200: every eligible invoice is pushed once, and the log says why the scan
    read past the short page."""
    generate(box.kantata, seed=18, invoices=260)
    box.kantata.set_paging(max_per_page=100, page_count_offset=-1)
    env = cli_env(box, tmp_path)
    done = run_cli(["sync"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "paging signals disagree" in done.stderr
    books = check_books(box)
    assert books.problems == []
    assert books.noko_invoices == books.eligible > 200
    again = run_cli(["sync"], env, tmp_path)
    assert again.returncode == 0 and "pushed" not in again.stdout
    assert check_books(box).problems == []
