"""The invoice lifecycle through the CLI: updates, drafts, cancellation, payment, hand edits.

Each test drives the real `kantata-sync` process against the sandbox over HTTP and then looks
at both systems: the Noko invoice (same id, right total, state) and the Kantata reference.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sandbox import Sandbox
from tests.e2e import check_books, cli_env, run_cli, status_json


def _workspace(box: Sandbox) -> int:
    return box.kantata.add_workspace("Harbour redesign", currency="USD")


def _new_invoice(box: Sandbox, **extra: Any) -> int:
    fields: dict[str, Any] = {
        "workspace_ids": [_workspace(box)],
        "currency": "USD",
        "tax_rate": "10",
        "lines": [
            {"kind": "time_entry", "time_in_minutes": 90, "rate_in_cents": 15000, "taxable": True},
            {"kind": "expense", "amount_in_cents": 4250, "notes": "Train", "taxable": False},
        ],
    }
    fields.update(extra)
    return box.kantata.add_invoice(**fields)


def _noko_invoice(box: Sandbox, kantata_id: int) -> dict[str, Any] | None:
    found = [i for i in box.noko.state()["invoices"] if i["reference"] == f"KS-{kantata_id}"]
    assert len(found) <= 1, found
    return found[0] if found else None


def _reference(box: Sandbox, kantata_id: int) -> dict[str, Any] | None:
    refs = [r for r in box.kantata.external_references(kantata_id) if r["service_name"] == "noko"]
    return refs[0] if refs else None


def _kantata_total(box: Sandbox, kantata_id: int) -> Decimal:
    invoice = box.kantata.invoice_state(kantata_id)
    return Decimal(int(invoice["balance_in_cents"])) / Decimal(int(invoice["currency_base_unit"]))


def _sync(box: Sandbox, tmp_path: Path, expect: int = 0, **env: str) -> None:
    done = run_cli(["sync"], cli_env(box, tmp_path, **env), tmp_path)
    assert done.returncode == expect, done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_update_keeps_the_noko_id_and_follows_every_change(box: Sandbox, tmp_path: Path) -> None:
    """Lines added and removed, tax rate and message changed: one Noko invoice, right total."""
    kid = _new_invoice(box)
    _sync(box, tmp_path)
    first = _noko_invoice(box, kid)
    assert first is not None
    assert Decimal(str(first["total_amount"])) == _kantata_total(box, kid)
    line_ids = box.kantata.invoice_state(kid)["expense_ids"]
    box.kantata.update_invoice(
        kid,
        add_lines=[{"kind": "additional_item", "amount_in_cents": 99999, "taxable": True}],
        remove_line_ids=line_ids,
        tax_rate="20",
        message="Revised after review",
        purchase_order="PO-7",
    )
    _sync(box, tmp_path)
    second = _noko_invoice(box, kid)
    assert second is not None
    assert second["id"] == first["id"]
    assert Decimal(str(second["total_amount"])) == _kantata_total(box, kid)
    assert "PO-7" in second["description"]
    assert [t["percentage"] for t in second["taxes"]] == [Decimal("20.00")] or [
        Decimal(str(t["percentage"])) for t in second["taxes"]
    ] == [Decimal(20)]
    ref = _reference(box, kid)
    assert ref is not None and ref["status"] == "successful"
    assert ref["service_model_ref"] == str(first["id"])
    assert check_books(box).problems == []


def test_draft_is_pushed_only_when_it_becomes_active(box: Sandbox, tmp_path: Path) -> None:
    """A draft leaves no trace; once active it is pushed like any invoice."""
    kid = _new_invoice(box, draft=True)
    _sync(box, tmp_path)
    assert _noko_invoice(box, kid) is None
    assert _reference(box, kid) is None
    box.kantata.update_invoice(kid, draft=False)
    _sync(box, tmp_path)
    pushed = _noko_invoice(box, kid)
    assert pushed is not None
    assert Decimal(str(pushed["total_amount"])) == _kantata_total(box, kid)
    assert _reference(box, kid) is not None


def test_deleted_draft_leaves_nothing(box: Sandbox, tmp_path: Path) -> None:
    """A draft deleted in Kantata leaves nothing in Noko and no failure behind."""
    kid = _new_invoice(box, draft=True)
    _sync(box, tmp_path)
    box.kantata.delete(kid)
    _sync(box, tmp_path)
    env = cli_env(box, tmp_path)
    report = status_json(env, tmp_path)
    assert report["failures"] == []
    assert box.noko.state()["invoices"] == []
    assert box.noko.state()["expenses"] == []


def test_cancel_before_payment_deletes_the_noko_invoice(box: Sandbox, tmp_path: Path) -> None:
    """Cancelled while unpaid: the Noko invoice and its expenses go; the reference says so."""
    kid = _new_invoice(box)
    _sync(box, tmp_path)
    assert _noko_invoice(box, kid) is not None
    box.kantata.cancel(kid)
    _sync(box, tmp_path)
    assert _noko_invoice(box, kid) is None
    assert box.noko.state()["expenses"] == []
    ref = _reference(box, kid)
    assert ref is not None
    assert ref["status"] == "successful"
    assert ref["external_status"] == "deleted"


@pytest.mark.parametrize("how", ["paid", "locked"])
def test_cancel_after_payment_is_a_conflict(box: Sandbox, tmp_path: Path, how: str) -> None:
    """Cancelled after Noko was paid (or locked): Noko untouched, conflict reported."""
    kid = _new_invoice(box)
    _sync(box, tmp_path)
    noko = _noko_invoice(box, kid)
    assert noko is not None
    if how == "paid":
        box.noko.set_invoice_state(int(noko["id"]), "paid")
    else:
        box.noko.lock(int(noko["id"]))
    box.kantata.cancel(kid)
    _sync(box, tmp_path, expect=1)
    after = _noko_invoice(box, kid)
    assert after is not None and after["id"] == noko["id"]
    ref = _reference(box, kid)
    assert ref is not None and ref["status"] == "failed"
    assert "Noko" in ref["external_message"] and "resolve" in ref["external_message"]
    report = status_json(cli_env(box, tmp_path), tmp_path)
    assert report["counts"]["conflict"] == 1
    assert [c["kantata_invoice_id"] for c in report["conflicts"]] == [str(kid)]
    assert report["conflicts"][0]["reason"]


@pytest.mark.parametrize("state", ["awaiting_payment", "in_progress", "paid", "unpaid"])
def test_noko_state_flows_back_as_external_status(box: Sandbox, tmp_path: Path, state: str) -> None:
    """Noko's state appears on the Kantata reference; written only when it changes."""
    kid = _new_invoice(box)
    _sync(box, tmp_path)
    ref = _reference(box, kid)
    assert ref is not None and ref["external_status"] == "unpaid"
    noko = _noko_invoice(box, kid)
    assert noko is not None
    if state == "unpaid":
        box.noko.set_invoice_state(int(noko["id"]), "paid")
        _sync(box, tmp_path)
    box.noko.set_invoice_state(int(noko["id"]), state)
    _sync(box, tmp_path)
    ref = _reference(box, kid)
    assert ref is not None and ref["external_status"] == state
    writes = len(box.kantata.state()["stats"]["writes"])
    _sync(box, tmp_path)
    assert len(box.kantata.state()["stats"]["writes"]) == writes


def test_payment_is_recorded_in_kantata_once_when_enabled(box: Sandbox, tmp_path: Path) -> None:
    """With payment recording on, a paid Noko invoice becomes one Kantata external payment."""
    kid = _new_invoice(box)
    _sync(box, tmp_path)
    noko = _noko_invoice(box, kid)
    assert noko is not None
    box.noko.set_invoice_state(int(noko["id"]), "paid")
    _sync(box, tmp_path, KANTATA_SYNC_RECORD_PAYMENTS="true")
    _sync(box, tmp_path, KANTATA_SYNC_RECORD_PAYMENTS="true")
    payments = [p for p in box.kantata.state()["external_payments"] if p["invoice_id"] == str(kid)]
    assert len(payments) == 1
    # In full: the invoice's balance; the request names no amount (Kantata would ignore it).
    assert payments[0]["amount_in_cents"] == box.kantata.invoice_state(kid)["balance_in_cents"]
    sent = [
        w["body"]
        for w in box.kantata.state()["stats"]["writes"]
        if w["template"] == "/external_payments"
    ]
    assert sent == [
        {"external_payment": {"invoice_id": kid, "workspace_id": payments_ws(box, kid)}}
    ]
    assert box.kantata.invoice_state(kid)["status"] == "accepted payment"
    assert check_books(box).problems == []


def payments_ws(box: Sandbox, kantata_id: int) -> int:
    return int(box.kantata.invoice_state(kantata_id)["workspace_ids"][0])


def test_hand_edit_in_noko_is_a_conflict_until_forced(box: Sandbox, tmp_path: Path) -> None:
    """A Noko total changed by hand is reported, left alone, and restored by retry --force."""
    kid = _new_invoice(box)
    _sync(box, tmp_path)
    noko = _noko_invoice(box, kid)
    assert noko is not None
    project_id = int(noko["projects"][0]["id"])
    box.noko.edit_invoice(
        int(noko["id"]),
        add_expenses=[
            {
                "price": "500.00",
                "description": "Added by hand",
                "taxable": False,
                "project_id": project_id,
            }
        ],
    )
    _sync(box, tmp_path, expect=1)
    edited = _noko_invoice(box, kid)
    assert edited is not None
    report = status_json(cli_env(box, tmp_path), tmp_path)
    assert [c["kantata_invoice_id"] for c in report["conflicts"]] == [str(kid)]
    assert "by hand" in report["conflicts"][0]["reason"]
    # Kantata changes meanwhile: still not overwritten.
    box.kantata.update_invoice(kid, message="changed while in conflict")
    _sync(box, tmp_path, expect=1)
    still = _noko_invoice(box, kid)
    assert still is not None
    assert still["total_amount"] == edited["total_amount"]
    assert still["description"] == edited["description"]
    forced = run_cli(["retry", str(kid), "--force"], cli_env(box, tmp_path), tmp_path)
    assert forced.returncode == 0, forced.stderr
    restored = _noko_invoice(box, kid)
    assert restored is not None and restored["id"] == noko["id"]
    assert Decimal(str(restored["total_amount"])) == _kantata_total(box, kid)
    assert status_json(cli_env(box, tmp_path), tmp_path)["counts"]["conflict"] == 0
    ref = _reference(box, kid)
    assert ref is not None and ref["status"] == "successful"


def test_noko_invoice_deleted_behind_our_back(box: Sandbox, tmp_path: Path) -> None:
    """A Noko invoice deleted by hand is a conflict; retry --force pushes it again, once."""
    kid = _new_invoice(box)
    _sync(box, tmp_path)
    noko = _noko_invoice(box, kid)
    assert noko is not None
    box.noko.delete_invoice(int(noko["id"]))
    box.kantata.update_invoice(kid, message="edited after the Noko deletion")
    _sync(box, tmp_path, expect=1)
    report = status_json(cli_env(box, tmp_path), tmp_path)
    assert [c["kantata_invoice_id"] for c in report["conflicts"]] == [str(kid)]
    forced = run_cli(["retry", str(kid), "--force"], cli_env(box, tmp_path), tmp_path)
    assert forced.returncode == 0, forced.stderr
    again = _noko_invoice(box, kid)
    assert again is not None
    assert Decimal(str(again["total_amount"])) == _kantata_total(box, kid)
    assert check_books(box).problems == []


def test_conflict_resolved_by_keeping_noko(box: Sandbox, tmp_path: Path) -> None:
    """Cancelled after payment, then `resolve`: the conflict ends, Noko stays untouched, and
    plain `retry` never overrides a conflict."""
    kid = _new_invoice(box)
    _sync(box, tmp_path)
    noko = _noko_invoice(box, kid)
    assert noko is not None
    box.noko.set_invoice_state(int(noko["id"]), "paid")
    box.kantata.cancel(kid)
    _sync(box, tmp_path, expect=1)
    env = cli_env(box, tmp_path)
    plain = run_cli(["retry", str(kid)], env, tmp_path)
    assert plain.returncode == 1
    assert status_json(env, tmp_path)["counts"]["conflict"] == 1
    done = run_cli(["resolve", str(kid)], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    report = status_json(env, tmp_path)
    assert report["counts"]["conflict"] == 0
    assert report["failures"] == []
    kept = _noko_invoice(box, kid)
    assert kept is not None and kept["id"] == noko["id"] and kept["state"] == "paid"
    _sync(box, tmp_path)


def test_back_to_draft_after_push_leaves_no_trace_in_noko(box: Sandbox, tmp_path: Path) -> None:
    """An invoice made a draft again after it was pushed is removed from Noko; when it becomes
    active again it is pushed again, once."""
    kid = _new_invoice(box)
    _sync(box, tmp_path)
    assert _noko_invoice(box, kid) is not None
    box.kantata.update_invoice(kid, draft=True)
    _sync(box, tmp_path)
    assert _noko_invoice(box, kid) is None
    box.kantata.update_invoice(kid, draft=False)
    _sync(box, tmp_path)
    again = _noko_invoice(box, kid)
    assert again is not None
    assert Decimal(str(again["total_amount"])) == _kantata_total(box, kid)
    assert check_books(box).problems == []


def test_synced_invoice_made_unmappable_recovers_when_fixed(box: Sandbox, tmp_path: Path) -> None:
    """A synced invoice whose Kantata data turns bad fails (not a conflict); fixing it in
    Kantata is enough to bring Noko up to date."""
    kid = _new_invoice(box)
    _sync(box, tmp_path)
    box.kantata.corrupt_invoice(kid, "currency", "XXX")
    _sync(box, tmp_path, expect=1)
    report = status_json(cli_env(box, tmp_path), tmp_path)
    assert [f["kantata_invoice_id"] for f in report["failures"]] == [str(kid)]
    assert report["counts"]["conflict"] == 0
    box.kantata.corrupt_invoice(kid, "currency", "USD")
    box.kantata.update_invoice(kid, message="fixed")
    _sync(box, tmp_path)
    noko = _noko_invoice(box, kid)
    assert noko is not None
    assert "fixed" in noko["description"]
    assert check_books(box).problems == []
