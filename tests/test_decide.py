"""The per-invoice decision, driven without servers: a decoded invoice and a stored record in,
the action out (connector/sync/decide.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from connector.state.models import InvoiceRecord
from connector.sync.decide import Action, Decision, decide, decide_source
from mappings.errors import MappingError
from mappings.kantata import KantataInvoice, UndecodableInvoice

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
FP = "fingerprint-1"


def _invoice(**changes: object) -> KantataInvoice:
    base = KantataInvoice(
        id="4001",
        created_at=NOW,
        updated_at=NOW,
        invoice_date=None,
        due_date=None,
        payment_schedule=None,
        draft=False,
        status="new",
        title="",
        user_invoice_number="",
        user_invoice_title="",
        purchase_order="",
        project_code="",
        message="",
        tax_rate=Decimal(0),
        balance_in_cents=1000,
        currency="USD",
        exponent=2,
        currency_symbol="$",
        recipient=None,
        workspaces=(),
        lines=(),
        external_references=(),
        source_fingerprint="source-1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def _record(**changes: object) -> InvoiceRecord:
    record = InvoiceRecord(kantata_id="4001", status="pending", first_seen_at=NOW, updated_at=NOW)
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def _synced(**changes: object) -> InvoiceRecord:
    values: dict[str, object] = {
        "status": "synced",
        "fingerprint": FP,
        "source_fingerprint": "source-1",
        "target_id": "26601",
        "target_state": "unpaid",
    }
    values.update(changes)
    return _record(**values)


def _decide(
    record: InvoiceRecord | None,
    *,
    inv: KantataInvoice | None = None,
    fingerprint: str = FP,
    stale: bool = False,
    in_place: bool = True,
    now: datetime = NOW,
    force: bool = False,
    retry_now: bool = False,
) -> Decision:
    return decide(
        inv or _invoice(),
        record,
        fingerprint,
        stale=stale,
        reference_in_place=lambda _record: in_place,
        now=now,
        force=force,
        retry_now=retry_now,
    )


# ------------------------------------------------------------------ before mapping


def test_a_stored_conflict_waits_for_an_operator_unless_forced() -> None:
    record = _synced(status="conflict")
    assert decide_source(_invoice(), record, force=False).action is Action.CONFLICT
    assert decide_source(_invoice(), record, force=True).action is Action.MAP


@pytest.mark.parametrize(
    ("inv", "reason"),
    [(_invoice(draft=True), "draft"), (_invoice(status="Cancelled"), "cancelled")],
)
def test_drafts_and_cancelled_invoices_not_in_the_target_are_skipped(
    inv: KantataInvoice, reason: str
) -> None:
    assert decide_source(inv, None, force=False) == Decision(Action.SKIP, reason)


@pytest.mark.parametrize("stage", ["", "pushing"])
def test_a_cancelled_invoice_in_the_target_is_cancelled_there(stage: str) -> None:
    record = _synced(stage=stage) if not stage else _record(stage=stage)
    inv = _invoice(status="cancelled")
    assert decide_source(inv, record, force=False).action is Action.CANCEL


def test_a_cancelled_invoice_deleted_in_the_target_is_settled() -> None:
    record = _synced(status="skipped", target_state="deleted", skip_reason="cancelled")
    assert decide_source(_invoice(), record, force=False).action is Action.SETTLED
    assert decide_source(_invoice(), record, force=True).action is Action.MAP


def test_an_undecodable_invoice_is_a_mapping_failure_unless_a_draft_or_cancelled() -> None:
    broken = UndecodableInvoice(
        id="4001",
        error=MappingError("4001", "currency", "not known"),
        updated_at=NOW,
        source_fingerprint="s",
    )
    assert decide_source(broken, None, force=False).action is Action.UNMAPPABLE
    draft = replace(broken, draft=True)
    assert decide_source(draft, None, force=False) == Decision(Action.SKIP, "draft")
    cancelled = replace(broken, status="cancelled")
    assert decide_source(cancelled, _synced(), force=False).action is Action.CANCEL


# ------------------------------------------------------------------ after mapping


def test_a_new_invoice_is_pushed() -> None:
    assert _decide(None) == Decision(Action.PUSH)


def test_a_state_file_that_may_be_old_looks_in_the_target_first() -> None:
    assert _decide(None, stale=True).action is Action.RECOVER
    assert _decide(_synced(), stale=True).action is Action.RECOVER


def test_synced_and_unchanged_with_its_reference_is_unchanged() -> None:
    assert _decide(_synced()).action is Action.UNCHANGED


def test_synced_and_unchanged_without_its_reference_writes_the_reference_only() -> None:
    assert _decide(_synced(), in_place=False).action is Action.WRITE_REFERENCE


def test_a_changed_document_updates_the_target_in_place() -> None:
    assert _decide(_synced(), fingerprint="fingerprint-2").action is Action.UPDATE


def test_force_updates_even_an_unchanged_invoice() -> None:
    assert _decide(_synced(), force=True).action is Action.UPDATE


def test_pushed_with_the_write_back_outstanding_finishes() -> None:
    record = _synced(status="pending", stage="pushed")
    assert _decide(record).action is Action.FINISH
    assert _decide(record, fingerprint="fingerprint-2").action is Action.UPDATE


def test_a_failure_waits_for_its_retry_time_or_a_change_in_kantata() -> None:
    later = NOW + timedelta(minutes=5)
    failed = _record(
        status="failed", fingerprint=FP, source_fingerprint="source-1", next_attempt_at=later
    )
    assert _decide(failed).action is Action.WAIT
    assert _decide(failed, now=later).action is Action.PUSH
    assert _decide(failed, retry_now=True).action is Action.PUSH
    assert _decide(failed, fingerprint="fingerprint-2").action is Action.PUSH
    changed = _invoice(source_fingerprint="source-2")
    assert _decide(failed, inv=changed).action is Action.PUSH
    mapping = _record(status="failed", fingerprint=FP, source_fingerprint="source-1")
    assert _decide(mapping, now=later + timedelta(days=365)).action is Action.WAIT


def test_deleted_in_the_target_is_pushed_anew() -> None:
    record = _synced(target_state="deleted", fingerprint="old")
    assert _decide(record) == Decision(Action.PUSH, forget="plain")


def test_forced_after_a_deletion_in_the_target_pushes_anew_recovering_leftovers() -> None:
    record = _synced(status="failed", error_kind="gone")
    assert _decide(record, force=True) == Decision(Action.PUSH, forget="recover")
    assert _decide(record).action is Action.WAIT
