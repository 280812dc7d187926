"""The engine knows no accounting system: given any `Target`, here an in-memory one with ids
that are not numbers and batches of three, it pushes, writes the references, stays quiet when
nothing changed, updates in place and cancels, and never reaches Noko."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector.faces.app import open_connector
from connector.faces.report import build_report
from connector.sync.engine import SyncEngine
from connector.targets.base import (
    Cancel,
    Cancelled,
    TargetIndex,
    TargetInvoice,
    Write,
    Written,
)
from connector.targets.noko.index import NokoIndex
from mappings.errors import MappingError
from mappings.ledger import LedgerDocument
from sandbox import Sandbox, generate
from tests.e2e import settings_for


class _Ledgerly:
    """An accounting system in memory: UUID ids, writes in batches of three."""

    name = "Ledgerly"
    batch_size = 3

    def __init__(self, cannot_hold: str = "") -> None:
        self.cannot_hold = cannot_hold
        """A currency this system cannot hold: such an invoice fails alone, nothing sent."""
        self.invoices: dict[str, dict[str, Any]] = {}
        self.batches: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def _answer(self, invoice: dict[str, Any]) -> Written:
        return Written(
            invoice=dict(invoice),
            target_id=invoice["id"],
            link=self.link(invoice),
            state=invoice["state"],
            lines=list(invoice["lines"]),
            created=True,
        )

    @staticmethod
    def _fields(doc: LedgerDocument) -> dict[str, Any]:
        return {
            "reference": doc.reference,
            "total_amount": str(Decimal(doc.total_minor).scaleb(-doc.exponent)),
            "total_minor": doc.total_minor,
            "lines": [line.key for line in doc.lines],
        }

    def find(self, prefix: str) -> Iterator[dict[str, Any]]:
        return iter([dict(i) for i in self.invoices.values() if i["reference"].startswith(prefix)])

    def get(self, target_id: str) -> dict[str, Any] | None:
        found = self.invoices.get(target_id)
        return None if found is None else dict(found)

    def changes_since(
        self,
        since: datetime | None,
        *,
        on_server_time: Callable[[datetime | None], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        return iter([])

    def new_index(self, *, wanted: bool) -> TargetIndex:
        return NokoIndex(wanted=wanted)

    def link(self, invoice: TargetInvoice) -> str | None:
        return f"https://ledgerly.example/invoices/{invoice['id']}"

    def carries_marker(self, invoice: TargetInvoice, reference: str) -> bool:
        return invoice.get("reference") == reference

    def as_asked(self, doc: LedgerDocument, invoice: TargetInvoice) -> bool:
        return bool(invoice.get("total_minor") == doc.total_minor)

    def line_drift(self, invoice: TargetInvoice, pushed: Sequence[str]) -> list[str]:
        return []

    def create(self, items: Sequence[Write]) -> list[Written | Exception]:
        with self.lock:
            self.batches.append(("create", len(items)))
            out: list[Written | Exception] = []
            for item in items:
                if item.doc.currency == self.cannot_hold:
                    out.append(
                        MappingError(
                            item.kantata_id,
                            "currency",
                            f"{self.cannot_hold} is not enabled in Ledgerly",
                        )
                    )
                    continue
                invoice = {"id": str(uuid.uuid4()), "state": "AUTHORISED", "paid": False}
                invoice.update(self._fields(item.doc))
                self.invoices[invoice["id"]] = invoice
                out.append(self._answer(invoice))
            return out

    def update(self, items: Sequence[Write]) -> list[Written | Exception]:
        with self.lock:
            self.batches.append(("update", len(items)))
            out: list[Written | Exception] = []
            for item in items:
                assert item.target_id is not None
                invoice = self.invoices[item.target_id]
                invoice.update(self._fields(item.doc))
                out.append(self._answer(invoice))
            return out

    def cancel(self, items: Sequence[Cancel]) -> list[Cancelled | Exception]:
        with self.lock:
            self.batches.append(("cancel", len(items)))
            for item in items:
                self.invoices[item.target_id]["state"] = "VOIDED"
            return [Cancelled(item.target_id, "VOIDED") for item in items]

    def discard(self, reference: str, target_id: str) -> int:
        self.invoices.pop(target_id, None)
        return 0

    def find_one(self, reference: str) -> TargetInvoice | None:
        found = [i for i in self.invoices.values() if i["reference"] == reference]
        return found[0] if found else None

    def sweep(self, reference: str) -> int:
        return 0

    def sweep_late_writes(self, done: Callable[[str], bool]) -> int:
        return 0

    def header_differs(self, doc: LedgerDocument, invoice: TargetInvoice) -> bool:
        return False


def test_the_engine_works_any_target_through_the_interface(box: Sandbox, tmp_path: Path) -> None:
    generate(box.kantata, seed=71, invoices=10, draft_rate=0, cancelled_rate=0)
    ledgerly = _Ledgerly()
    with open_connector(settings_for(box, tmp_path, kantata_sync_workers=4)) as c:
        engine = SyncEngine(
            kantata=c.kantata,
            target=ledgerly,
            store=c.store,
            profile=c.engine.profile,
            settings=c.engine.settings,
        )
        first = engine.run_cycle()
        assert first.exit_code == 0, first.failed
        assert first.counts["pushed"] == 10
        creates = [n for kind, n in ledgerly.batches if kind == "create"]
        assert sum(creates) == 10 and max(creates) <= 3, creates
        for kantata_id in box.kantata.invoice_ids():
            record = c.store.get_invoice(str(kantata_id))
            assert record is not None and record.status == "synced"
            assert record.target_id in ledgerly.invoices  # a UUID, kept as text
            (ref,) = box.kantata.external_references(kantata_id)
            assert ref["status"] == "successful"
            assert ref["service_model_ref"] == record.target_id
            assert ref["external_message"].startswith("Ledgerly invoice KS-")

        ledgerly.batches.clear()
        quiet = engine.run_cycle()
        assert quiet.exit_code == 0 and ledgerly.batches == []

        first_id, second_id = box.kantata.invoice_ids()[:2]
        record = c.store.get_invoice(str(first_id))
        assert record is not None
        kept_id = record.target_id
        box.kantata.update_invoice(first_id, purchase_order="PO-2026-9")
        box.kantata.cancel(second_id)
        changed = engine.run_cycle()
        assert changed.exit_code == 0, changed.failed
        assert (changed.counts["updated"], changed.counts["cancelled"]) == (1, 1)
        updated = c.store.get_invoice(str(first_id))
        assert updated is not None and updated.target_id == kept_id  # in place, same id
        assert ("update", 1) in ledgerly.batches
        cancelled = c.store.get_invoice(str(second_id))
        assert cancelled is not None and cancelled.status == "skipped"
        assert ledgerly.invoices[str(cancelled.target_id)]["state"] == "VOIDED"
        assert ("cancel", 1) in ledgerly.batches
    # Noko was never asked for anything.
    assert box.noko.state()["invoices"] == []
    assert kept_id in ledgerly.invoices


def test_an_invoice_the_target_cannot_hold_fails_alone_with_the_reason(
    box: Sandbox, tmp_path: Path
) -> None:
    """A per-invoice MappingError from the target (what it cannot hold exactly) fails that
    invoice as `unfit`, says so in Kantata and in the report's advice, and the rest of the
    batch is pushed."""
    generate(box.kantata, seed=72, invoices=8, draft_rate=0, cancelled_rate=0)
    currency = {i: box.kantata._invoices[i].currency for i in box.kantata.invoice_ids()}
    refused = sorted(set(currency.values()))[0]
    ledgerly = _Ledgerly(cannot_hold=refused)
    with open_connector(settings_for(box, tmp_path, kantata_sync_workers=4)) as c:
        engine = SyncEngine(
            kantata=c.kantata,
            target=ledgerly,
            store=c.store,
            profile=c.engine.profile,
            settings=c.engine.settings,
        )
        result = engine.run_cycle()
        unfit = [i for i, code in currency.items() if code == refused]
        assert unfit and result.counts["failed"] == len(unfit)
        assert result.counts["pushed"] == 8 - len(unfit)
        for kantata_id in unfit:
            record = c.store.get_invoice(str(kantata_id))
            assert record is not None and record.status == "failed"
            assert record.error_kind == "unfit" and record.target_id is None
            assert f"{refused} is not enabled" in (record.last_error or "")
            (ref,) = box.kantata.external_references(kantata_id)
            assert ref["status"] == "failed"
            assert ref["external_message"].startswith("Ledgerly cannot hold this invoice")
        report = build_report(c.store, target="Ledgerly")
        advice = {row["kantata_invoice_id"]: row["action"] for row in report["failures"]}
        assert "enable the currency in Ledgerly" in advice[str(unfit[0])]
    assert len(ledgerly.invoices) == 8 - len(unfit)


def test_a_clock_set_on_the_engine_is_the_one_every_part_reads(
    box: Sandbox, tmp_path: Path
) -> None:
    """The parts (changes, records, write-back, late writes) read the engine's clock at each
    use: time moved on for the engine is moved on for all of them (the target's changes
    cursor is set from it)."""
    moment = datetime(2031, 5, 4, 3, 2, 1, tzinfo=UTC)
    with open_connector(settings_for(box, tmp_path)) as c:
        engine = c.engine
        engine.clock = lambda: moment
        assert engine.changes.clock() == moment
        assert engine.writeback.clock() == moment
        assert engine.late.clock() == moment
        assert engine.records.retry_at(1) - moment == timedelta(
            seconds=engine.settings.retry_initial_delay
        )
