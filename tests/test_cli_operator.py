"""What a pipeline operator expects of the command line: the cursor, a full re-read that writes
nothing where nothing changed, `sync --dry-run` and `sync --json`, a backfill bar that logs
print above and whose time left comes from the paced rate, and plain wording."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from rich.console import Console

from connector.faces.cli import Pace, Progress
from connector.faces.logs import configure_logging
from sandbox import Sandbox, generate
from tests.e2e import check_books, cli_env, run_cli


def _writes(box: Sandbox) -> tuple[int, int]:
    return len(box.kantata.state()["stats"]["writes"]), len(box.noko.state()["stats"]["writes"])


def test_cursor_show_set_and_full_refresh_write_nothing_unchanged(
    box: Sandbox, tmp_path: Path
) -> None:
    """`cursor show` names the cursor, `cursor set` refuses the future and bad dates in one
    line, moves it forward only with --skip, and moving it back (or `sync --full-refresh`)
    re-reads every invoice without a write to Noko or Kantata for the ones that did not
    change."""
    generate(box.kantata, seed=41, invoices=20)
    env = cli_env(box, tmp_path)
    missing = run_cli(["cursor", "show"], env, tmp_path)
    assert missing.returncode == 2
    assert "no state file" in missing.stderr
    assert not (tmp_path / "state.db").exists()

    assert run_cli(["sync"], env, tmp_path).returncode == 0
    shown = run_cli(["cursor", "show"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert re.match(r"cursor: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", shown.stdout)

    future = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%d")
    refused = run_cli(["cursor", "set", future], env, tmp_path)
    assert refused.returncode == 2
    assert "is in the future" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    bad = run_cli(["cursor", "set", "yesterday"], env, tmp_path)
    assert bad.returncode == 2
    assert "is not a date" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert run_cli(["cursor", "show"], env, tmp_path).stdout == shown.stdout  # unchanged

    # Forward, past changes sync has not read: only when asked for.
    ahead = (datetime.now(UTC) - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    forward = run_cli(["cursor", "set", ahead], env, tmp_path)
    assert forward.returncode == 2
    assert "add --skip" in forward.stderr and len(forward.stderr.strip().splitlines()) == 1
    assert run_cli(["cursor", "show"], env, tmp_path).stdout == shown.stdout
    skipped = run_cli(["cursor", "set", "--skip", ahead], env, tmp_path)
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout.startswith(f"cursor: {ahead} (was ")

    writes = _writes(box)
    moved = run_cli(["cursor", "set", "2001-01-01"], env, tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.startswith("cursor: 2001-01-01T00:00:00Z (was ")
    again = run_cli(["sync"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "unchanged" in again.stdout and "pushed" not in again.stdout
    assert _writes(box) == writes

    full = run_cli(["sync", "--full-refresh", "--json"], env, tmp_path)
    assert full.returncode == 0, full.stderr
    lines = [json.loads(line) for line in full.stdout.splitlines()]
    assert len(lines) == 20  # every invoice read again, from the start
    assert {line["action"] for line in lines} <= {"unchanged", "skipped"}
    assert _writes(box) == writes
    assert check_books(box).problems == []


def test_sync_dry_run_and_json_lines(box: Sandbox, tmp_path: Path) -> None:
    """`sync --dry-run` plans (Noko invoices, not Kantata ones, "1 line") and writes nothing;
    `sync --json` gives one JSON line per invoice on stdout, the summary on stderr."""
    generate(box.kantata, seed=42, invoices=12, draft_rate=0, cancelled_rate=0)
    workspace = box.kantata.state()["workspaces"][0]
    one_line = box.kantata.add_invoice(
        workspace_ids=[int(workspace["id"])],
        currency="USD",
        lines=[{"kind": "fixed_fee_item", "amount_in_cents": 123456, "taxable": False}],
    )
    env = cli_env(box, tmp_path)
    writes = _writes(box)
    planned = run_cli(["sync", "--dry-run"], env, tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert _writes(box) == writes
    assert f"would create Noko invoice for Kantata invoice {one_line}: " in planned.stdout
    assert f"KS-{one_line}: 1 line, 1,234.56 USD" in planned.stdout
    assert not re.search(r"\b1 lines", planned.stdout)
    assert "Dry run, nothing written: 13 to create" in planned.stdout

    as_json = run_cli(["sync", "--dry-run", "--json"], env, tmp_path)
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(rows) == 13
    mine = next(r for r in rows if r["kantata_invoice_id"] == str(one_line))
    assert mine["action"] == "would-push"
    assert (mine["total"], mine["currency"], mine["noko_invoice_id"]) == ("1234.56", "USD", None)
    assert _writes(box) == writes

    done = run_cli(["sync", "--json"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "sync ok" in done.stderr and "sync ok" not in done.stdout
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 13
    assert {r["action"] for r in rows} == {"pushed"}
    noko_ids = {str(i["id"]) for i in box.noko.state()["invoices"]}
    assert {r["noko_invoice_id"] for r in rows} == noko_ids
    mine = next(r for r in rows if r["kantata_invoice_id"] == str(one_line))
    assert (mine["total"], mine["currency"]) == ("1234.56", "USD")


@pytest.mark.e2e  # the CLI in a subprocess
def test_show_and_resolve_refuse_a_bad_id_alike(tmp_path: Path) -> None:
    """`show abc` and `resolve abc` are both usage errors: exit 2, one line."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    shown = run_cli(["show", "abc"], env, tmp_path)
    resolved = run_cli(["resolve", "abc"], env, tmp_path)
    assert shown.returncode == resolved.returncode == 2
    assert shown.stderr == resolved.stderr == "kantata-sync: not a Kantata invoice id: abc\n"


@pytest.mark.e2e  # the CLI in a subprocess
def test_help_shows_no_bool_on_flags(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "100"}
    for command in (["--help"], ["sync", "--help"], ["backfill", "--help"], ["reconcile", "-h"]):
        done = run_cli(command, env, tmp_path)
        assert done.returncode == 0
        assert "--help" in done.stdout
        assert "<bool>" not in done.stdout, command


def test_time_left_comes_from_the_paced_rate() -> None:
    """Before anything is measured, the time left is the remaining invoices times the expected
    requests per invoice at the configured pace (Noko's 2/s sets it), not a rate extrapolated
    from the first, fast, few invoices; then it follows the requests actually sent."""
    sent = {"noko": 0, "kantata": 1}
    pace = Pace(2.0, 10.0, requests=lambda: (sent["noko"], sent["kantata"]))
    # 120 invoices, nothing done: 120 * 6 Noko requests / 2 per second = 360 s.
    assert pace.seconds_left(0, 120) == pytest.approx(360.0)
    # 10 drafts skipped in the first instant cost no requests: the estimate barely moves.
    assert pace.seconds_left(10, 120) == pytest.approx(110 * 3 / 2)
    # 100 done with 7 Noko requests each: 20 left at (60 + 700) / 110 requests each.
    sent["noko"] = 700
    assert pace.seconds_left(100, 120) == pytest.approx(20 * (760 / 110) / 2)
    assert Pace(1000.0, 1.0).seconds_left(0, 10) == pytest.approx(10.0)  # Kantata slower
    assert pace.seconds_left(0, None) is None


def test_log_lines_print_above_the_progress_bar() -> None:
    """On a terminal, the bar and the log lines share one console: each log line is printed
    on a line of its own with the bar cleared first, never glued after the bar."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    configure_logging("json", "info", console=console)
    try:
        now = [0.0]
        progress = Progress("backfill", Pace(2.0, 10.0), console=console, clock=lambda: now[0])
        progress.page(1, 100)
        log = structlog.get_logger("kantata_sync")
        for n in range(1, 6):
            now[0] = float(n)
            progress.advance({"pushed": n})
            log.warning("invoice failed", kantata_invoice_id=str(n))
        progress.close()
    finally:
        configure_logging("json", "info")
    text = out.getvalue()
    logged = [m.start() for m in re.finditer(r'\{"kantata_invoice_id"', text)]
    assert len(logged) == 5
    for start in logged:
        before = text[max(0, start - 20) : start]
        # The live bar is erased (cursor up, erase line) right before the log line.
        assert before.endswith("\x1b[2K") or before.endswith("\n"), repr(before)
        line_start = max(text.rfind("\n", 0, start), text.rfind("\r", 0, start)) + 1
        assert "backfill" not in text[line_start:start], repr(text[line_start:start])
    # 95 left, at (6 * 10 + 0 sent) / (10 + 5 done) Noko requests each, 2 per second: 190 s.
    assert "about 3 min left" in text


def test_hand_edit_message_uses_one_money_format(box: Sandbox, tmp_path: Path) -> None:
    """A Noko total changed by hand is reported in the same form as the total pushed
    (`1,234.56 USD` both), not one raw and one formatted; `sync --json` reports the conflict
    found in Noko's changes as a line of its own."""
    generate(box.kantata, seed=43, invoices=3, draft_rate=0, cancelled_rate=0)
    env = cli_env(box, tmp_path)
    assert run_cli(["sync"], env, tmp_path).returncode == 0
    edited = box.noko.state()["invoices"][0]
    box.noko.edit_invoice(
        int(edited["id"]),
        add_expenses=[
            {
                "price": "1000.00",
                "description": "by hand",
                "project_id": edited["projects"][0]["id"],
            }
        ],
    )
    second = run_cli(["sync", "--json"], env, tmp_path)
    rows = [json.loads(line) for line in second.stdout.splitlines()]
    # What Noko's changes brought is a line of its own too.
    (found,) = [r for r in rows if r["action"] == "conflict"]
    assert found["noko_invoice_id"] == str(edited["id"])
    assert "changed by hand" in found["detail"]
    report = json.loads(run_cli(["status", "--json"], env, tmp_path).stdout)
    (conflict,) = report["conflicts"]
    money = r"[0-9]{1,3}(?:,[0-9]{3})*\.[0-9]{2} [A-Z]{3}"
    assert re.search(rf"\(total {money}, pushed {money}[;)]", conflict["reason"]), conflict


@pytest.mark.e2e  # the CLI in a subprocess
def test_sandbox_help_shows_the_admin_api(tmp_path: Path) -> None:
    """`sandbox --help` says how to inject faults, corrupt an invoice and undo it, and edit
    Noko by hand, with commands that can be copied."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "80"}
    done = run_cli(["sandbox", "--help"], env, tmp_path)
    assert done.returncode == 0
    for needle in (
        "/_sandbox",
        "curl -s -XPOST $N/faults",
        "curl -s -XPOST $K/invoices/4001/corrupt",
        "curl -s -XDELETE $K/invoices/4001/corrupt",
        "curl -s -XPATCH $N/invoices/ID",
    ):
        assert needle in done.stdout, needle
