"""What goes missing behind the connector's back is noticed and put right, once.

A Kantata reference removed by a person is written again; a Noko invoice deleted by hand becomes
a conflict after `reconcile` and is pushed again, once, by `reconcile --apply`; a Kantata invoice
deleted after its push leaves no orphan in Noko. Each test drives the real CLI against the
sandbox over HTTP.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connector.faces.app import open_connector
from connector.faces.config import load_settings
from connector.sync.reconcile import RECONCILE_MARK, reconcile_if_due
from sandbox import Sandbox
from tests.e2e import check_books, cli_env, run_cli, status_json


def _invoice(box: Sandbox, cents: int = 50000) -> int:
    workspace = box.kantata.add_workspace("Harbour redesign", currency="USD")
    return box.kantata.add_invoice(
        workspace_ids=[workspace],
        currency="USD",
        lines=[{"kind": "fixed_fee_item", "amount_in_cents": cents, "taxable": False}],
    )


def _cli(box: Sandbox, tmp_path: Path, *args: str, expect: int = 0) -> str:
    done = run_cli(list(args), cli_env(box, tmp_path), tmp_path)
    assert done.returncode == expect, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def _reference(box: Sandbox, kantata_id: int) -> dict[str, Any] | None:
    refs = [r for r in box.kantata.external_references(kantata_id) if r["service_name"] == "noko"]
    return refs[0] if refs else None


def _noko_writes(box: Sandbox) -> dict[str, int]:
    requests: dict[str, int] = box.noko.stats.snapshot()["requests"]
    return {k: v for k, v in requests.items() if not k.startswith("GET ")}


def _noko_of(box: Sandbox, kantata_id: int) -> list[dict[str, Any]]:
    return [i for i in box.noko.state()["invoices"] if i["reference"] == f"KS-{kantata_id}"]


# ---------------------------------------------------------------- removed Kantata reference


def test_a_removed_reference_is_written_again_when_the_invoice_is_read(
    box: Sandbox, tmp_path: Path
) -> None:
    """Removed in Kantata, then the invoice is read again (touched, no change of content): the
    reference comes back, with no write to Noko."""
    kid = _invoice(box)
    _cli(box, tmp_path, "sync")
    before = _reference(box, kid)
    assert before is not None
    assert box.kantata.remove_external_reference(kid, "noko")
    box.kantata.touch([kid])
    box.noko.stats.reset()
    _cli(box, tmp_path, "sync")
    again = _reference(box, kid)
    assert again is not None
    assert again["status"] == "successful"
    assert again["service_model_ref"] == before["service_model_ref"]
    assert _noko_writes(box) == {}
    assert check_books(box).problems == []


def test_reconcile_apply_restores_a_removed_reference_without_touching_noko(
    box: Sandbox, tmp_path: Path
) -> None:
    """Removed in Kantata with no edit (so no scan sees it): `reconcile` lists it and
    `reconcile --apply` writes it again, with no write to Noko."""
    kid = _invoice(box)
    _cli(box, tmp_path, "sync")
    noko_id = _noko_of(box, kid)[0]["id"]
    assert box.kantata.remove_external_reference(kid, "noko")
    listed = json.loads(_cli(box, tmp_path, "reconcile", "--json", expect=1))
    assert [(d["kind"], d["kantata_invoice_id"]) for d in listed["differences"]] == [
        ("reference_missing", str(kid))
    ]
    box.noko.stats.reset()
    applied = json.loads(_cli(box, tmp_path, "reconcile", "--apply", "--json"))
    assert applied["repaired"] == [str(kid)]
    ref = _reference(box, kid)
    assert ref is not None and ref["service_model_ref"] == str(noko_id)
    assert _noko_writes(box) == {}
    assert check_books(box).problems == []


# ---------------------------------------------------------------- Noko invoice deleted by hand


def test_a_noko_invoice_deleted_by_hand_is_a_conflict_after_reconcile_and_pushed_once(
    box: Sandbox, tmp_path: Path
) -> None:
    kid = _invoice(box)
    other = _invoice(box, 12345)
    _cli(box, tmp_path, "sync")
    deleted = _noko_of(box, kid)[0]
    box.noko.delete_invoice(int(deleted["id"]))

    listed = json.loads(_cli(box, tmp_path, "reconcile", "--json", expect=1))
    assert [(d["kind"], d["kantata_invoice_id"]) for d in listed["differences"]] == [
        ("missing_in_noko", str(kid))
    ]
    report = status_json(cli_env(box, tmp_path), tmp_path)
    assert report["counts"]["synced"] == 1 and report["counts"]["conflict"] == 1
    (conflict,) = report["conflicts"]
    assert conflict["kantata_invoice_id"] == str(kid)
    assert str(deleted["id"]) in conflict["reason"]
    assert "reconcile --apply" in conflict["action"]
    # A sync leaves the conflict to the operator: nothing is pushed behind their back (the
    # invoice is in the sync's lookback window, so it is read and reported again: exit 1).
    _cli(box, tmp_path, "sync", expect=1)
    assert _noko_of(box, kid) == []

    _cli(box, tmp_path, "reconcile", "--apply")
    (again,) = _noko_of(box, kid)
    assert again["id"] != deleted["id"]
    ref = _reference(box, kid)
    assert ref is not None and ref["service_model_ref"] == str(again["id"])
    _cli(box, tmp_path, "reconcile", "--apply")
    assert len(_noko_of(box, kid)) == 1 and len(_noko_of(box, other)) == 1
    assert check_books(box).problems == []
    report = status_json(cli_env(box, tmp_path), tmp_path)
    assert report["counts"]["synced"] == 2 and report["conflicts"] == []


def test_the_daemon_reconciles_by_itself(box: Sandbox, tmp_path: Path) -> None:
    """`run` reconciles once per KANTATA_SYNC_RECONCILE_INTERVAL: a Noko invoice deleted by
    hand shows as a conflict in `status` without any operator step."""
    kid = _invoice(box)
    _cli(box, tmp_path, "sync")
    box.noko.delete_invoice(int(_noko_of(box, kid)[0]["id"]))
    env = cli_env(box, tmp_path, KANTATA_SYNC_RECONCILE_INTERVAL="3600")
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
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if not line or "scheduled reconcile" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, seen + stderr
    assert "scheduled reconcile" in seen
    report = status_json(cli_env(box, tmp_path), tmp_path)
    assert [c["kantata_invoice_id"] for c in report["conflicts"]] == [str(kid)]
    assert _noko_of(box, kid) == []  # listed, not repaired: an operator decides


def test_the_scheduled_reconcile_runs_once_per_interval(box: Sandbox, tmp_path: Path) -> None:
    now = [datetime(2026, 12, 1, tzinfo=UTC)]
    with open_connector(load_settings(environ=cli_env(box, tmp_path))) as connector:
        engine = connector.engine
        engine.clock = lambda: now[0]
        assert reconcile_if_due(engine, 0) is None
        assert reconcile_if_due(engine, 86400) is not None
        assert connector.store.get_cursor(RECONCILE_MARK) == now[0]
        now[0] += timedelta(hours=23)
        assert reconcile_if_due(engine, 86400) is None
        now[0] += timedelta(hours=1)
        assert reconcile_if_due(engine, 86400) is not None


# ---------------------------------------------------------------- Kantata invoice deleted


def _delete_in_kantata(box: Sandbox, kantata_id: int) -> None:
    # Kantata deletes only drafts: made a draft and deleted between two cycles.
    box.kantata.update_invoice(kantata_id, draft=True)
    box.kantata.delete(kantata_id)


def test_a_kantata_invoice_deleted_after_its_push_leaves_no_orphan(
    box: Sandbox, tmp_path: Path
) -> None:
    kid = _invoice(box)
    kept = _invoice(box, 777)
    _cli(box, tmp_path, "sync")
    noko_id = _noko_of(box, kid)[0]["id"]
    _delete_in_kantata(box, kid)
    _cli(box, tmp_path, "sync")

    listed = json.loads(_cli(box, tmp_path, "reconcile", "--json", expect=1))
    assert [(d["kind"], d["kantata_invoice_id"]) for d in listed["differences"]] == [
        ("deleted_in_kantata", str(kid))
    ]
    _cli(box, tmp_path, "reconcile", "--apply")
    assert _noko_of(box, kid) == []
    assert len(_noko_of(box, kept)) == 1
    assert check_books(box).problems == []
    shown = _cli(box, tmp_path, "show", str(kid))
    assert "deleted in Kantata" in shown and str(noko_id) in shown
    report = status_json(cli_env(box, tmp_path), tmp_path)
    assert report["counts"]["skipped"] == 1 and report["counts"]["synced"] == 1
    assert json.loads(_cli(box, tmp_path, "reconcile", "--json"))["differences"] == []


def test_a_kantata_invoice_deleted_after_its_noko_invoice_was_paid_is_a_conflict(
    box: Sandbox, tmp_path: Path
) -> None:
    kid = _invoice(box)
    _cli(box, tmp_path, "sync")
    (noko,) = _noko_of(box, kid)
    box.noko.set_invoice_state(int(noko["id"]), "paid")
    _delete_in_kantata(box, kid)
    _cli(box, tmp_path, "reconcile", "--apply", expect=1)
    assert len(_noko_of(box, kid)) == 1  # paid: left untouched
    report = status_json(cli_env(box, tmp_path), tmp_path)
    (conflict,) = report["conflicts"]
    assert conflict["kantata_invoice_id"] == str(kid)
    assert "deleted in Kantata" in conflict["reason"] and "paid" in conflict["reason"]
    resolved = _cli(box, tmp_path, "resolve", str(kid))
    assert "deleted in Kantata" in resolved
    assert status_json(cli_env(box, tmp_path), tmp_path)["conflicts"] == []


def test_the_daemon_removes_the_noko_invoice_of_a_deleted_kantata_invoice(
    box: Sandbox, tmp_path: Path
) -> None:
    """What a sync would do if it could see it: the scheduled reconcile applies it."""
    kid = _invoice(box)
    _cli(box, tmp_path, "sync")
    _delete_in_kantata(box, kid)
    with open_connector(load_settings(environ=cli_env(box, tmp_path))) as connector:
        outcome = reconcile_if_due(connector.engine, 86400)
        assert outcome is not None and outcome.repaired == [str(kid)]
    assert _noko_of(box, kid) == []
