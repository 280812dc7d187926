"""What changed in the target since the last cycle, brought back to Kantata: states (paid,
deleted, ...) as the reference's external status, payments as Kantata payments, hand edits as
conflicts."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from connector.errors import ApiError, PermanentApiError, TransientApiError
from connector.state.store import InvoiceRecord
from connector.sync.records import remember_kantata
from connector.sync.values import TAKEN_OUT
from connector.sync.values import fmt_total as _fmt_total
from connector.sync.values import parse_moment as _parse_moment
from connector.sync.values import text_id as _id
from mappings.errors import MappingError
from mappings.kantata import KantataInvoice, decode_invoices
from mappings.money import to_minor
from mappings.to_ledger import to_ledger

if TYPE_CHECKING:
    from connector.sync.engine import SyncEngine
    from connector.sync.outcome import CycleResult
    from connector.targets.base import Target


TARGET_CURSOR = "noko"
"""The store's cursor of the target's changes (its name kept from the first release)."""


class Changes:
    """The engine's reading of the target's changes (one per engine)."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine
        self.target: Target = engine.target
        self.kantata = engine.kantata
        self.store = engine.store
        self.settings = engine.settings
        self.profile = engine.profile
        self.clock = engine.now
        self.stop = engine.stop
        self.lock_for = engine.lock_for
        self.writeback = engine.writeback
        self.name = engine.target.name

    def poll(self, run_id: str, log: Any, result: CycleResult) -> None:
        """Read the target's invoices changed since the last cycle: payment states flow back
        to Kantata, hand edits become conflicts."""
        cursor = self.store.get_cursor(TARGET_CURSOR)
        started = self.clock()
        since = None if cursor is None else cursor - self.settings.lookback
        newest: datetime | None = None
        target_time: list[datetime | None] = []
        batch: list[dict[str, Any]] = []
        unknown: list[str] = []
        # A target that keeps credits apart (Xero's credit notes) reads them only when the
        # books hold one: a quiet cycle stays one request. Optional hook.
        expect_credits = getattr(self.target, "expect_credits", None)
        if since is not None and expect_credits is not None:
            expect_credits(self.store.has_credits())
        for invoice in self.target.changes_since(since, on_server_time=target_time.append):
            moment = _parse_moment(invoice.get("updated_at"))
            if moment is not None and (newest is None or moment > newest):
                newest = moment
            batch.append(invoice)
            if len(batch) >= 500:
                unknown += self._apply(batch, run_id, log, result)
                batch = []
        if batch:
            unknown += self._apply(batch, run_id, log, result)
        if unknown:
            self._match_unknown(unknown, run_id, log, result)
        # As for Kantata's cursor: the target's clock at the first page when it gave it (every
        # invoice changed before then was listed), else the newest change read.
        mark: datetime | None = None
        if target_time and target_time[0] is not None:
            mark = min(started, target_time[0]) - self.settings.clock_skew
        elif newest is not None:
            mark = min(newest, started - self.settings.clock_skew)
        if mark is not None and (cursor is None or mark > cursor):
            self.store.set_cursor(mark, TARGET_CURSOR)
        if self.settings.record_payments:
            for record in self.store.payments_due():
                with self.lock_for(record.kantata_id):
                    self._record_payment(record, run_id, log)

    def _apply(
        self, invoices: list[dict[str, Any]], run_id: str, log: Any, result: CycleResult
    ) -> list[str]:
        """Follow the target's changes; returns the Kantata ids of invoices of the connector's
        (owner marker) that the state file does not know: it is older than the target."""
        ids = [i for i in (_id(inv.get("id")) for inv in invoices) if i is not None]
        records = self.store.by_target_ids(ids)
        unknown: list[str] = []
        for invoice in invoices:
            target_id = _id(invoice.get("id"))
            record = records.get(target_id) if target_id is not None else None
            if record is None and target_id is not None:
                kantata_id = self._kantata_id_of(str(invoice.get("reference") or ""))
                if kantata_id is not None and self.target.carries_marker(
                    invoice, str(invoice.get("reference"))
                ):
                    unknown.append(kantata_id)
                continue
            if record is None or record.stage or record.status != "synced":
                continue
            with self.lock_for(record.kantata_id):
                self._observe(
                    invoice,
                    record,
                    run_id,
                    log.bind(kantata_invoice_id=record.kantata_id, target_invoice_id=target_id),
                    result,
                )
        return unknown

    def _kantata_id_of(self, reference: str) -> str | None:
        """The Kantata id in a reference made from the profile's template, if it is one."""
        pattern = re.escape(self.profile.ledger.reference)
        pattern = pattern.replace(re.escape("{id}"), "(?P<id>[0-9]+)", 1)
        pattern = pattern.replace(re.escape("{number}"), ".*?")
        match = re.fullmatch(pattern, reference)
        return match.group("id") if match is not None else None

    def _match_unknown(
        self, kantata_ids: list[str], run_id: str, log: Any, result: CycleResult
    ) -> None:
        """The target holds invoices of the connector's that the state file does not know (an old
        backup put back, and Kantata did not list them as changed): read those Kantata invoices
        (200 a request) and handle them now, matched against the target, so that none is created
        again when it next changes. Costs nothing when the state file is up to date."""
        ids = sorted(set(kantata_ids), key=lambda i: (len(i), i))
        log.warning(
            f"{self.name} holds invoices of the connector's that the state file does not know; "
            "matching them",
            invoices=len(ids),
        )
        self.engine.recover.index.wanted = True
        for inv in self.engine.cycle.fetch_by_id(ids, result):
            if self.stop.is_set():
                return
            outcome, error = self.engine.handle(inv, run_id, record=False)
            result.counts[outcome] += 1
            if outcome in ("failed", "waiting", "conflict"):
                result.failed[inv.id] = error or outcome
            else:
                result.failed.pop(inv.id, None)

    def _observe(
        self,
        invoice: dict[str, Any],
        record: InvoiceRecord,
        run_id: str,
        log: Any,
        result: CycleResult,
    ) -> None:
        drift = self._drift(invoice, record)
        if drift and self._as_kantata_asks(invoice, record, run_id, log):
            drift = None  # the record was older than the target, which is as Kantata asks
        if drift:
            outcome, message = self.engine.apply.conflict(record, "noko-edited", drift, run_id, log)
            result.counts[outcome] += 1
            result.failed[record.kantata_id] = message or drift
            if self.engine.on_invoice is not None:
                self.engine.on_invoice(record.kantata_id, outcome, message or drift, None)
            return
        state = str(invoice.get("state") or "")
        if state in TAKEN_OUT and state != record.target_state:
            # Voided or deleted in the target by hand while Kantata's invoice stands: not
            # synced any more; `reconcile --apply` (or `retry --force`) pushes it again.
            message = (
                f"{self.name} invoice {record.target_id} was {state.lower()} in {self.name} by "
                f"hand; run `kantata-sync reconcile --apply` (or `kantata-sync retry "
                f"{record.kantata_id} --force`) to push it again as a new {self.name} invoice"
            )
            record.target_state = state
            outcome, _ = self.engine.apply.conflict(record, "gone", message, run_id, log)
            result.counts[outcome] += 1
            result.failed[record.kantata_id] = message
            if self.engine.on_invoice is not None:
                self.engine.on_invoice(record.kantata_id, outcome, message, None)
            return
        # A link the create's answer left out (or an API address an earlier release stored)
        # is taken from the listing: written with the next reference, at once if none is due.
        # A target whose link costs a request (Xero's organisation short code) is asked only
        # when a reference is written anyway or none has a link: a quiet cycle stays quiet.
        link = None
        if (
            not getattr(self.target, "link_costs_a_request", False)
            or record.target_link is None
            or (state and state != record.target_state)
        ):
            link = self.target.link(invoice)
        relinked = link is not None and link != record.target_link
        if link is not None and relinked:
            record.target_link = link
        if not state or state == record.target_state:
            if link is not None and relinked:
                self.store.save_invoice(record, run_id=run_id, event="noko-link", detail=link)
                self.writeback.write_reference(
                    record.kantata_id, record, self.writeback.success_reference(record), run_id, log
                )
            return
        record.target_state = state
        self.store.save_invoice(record, run_id=run_id, event="noko-state", detail=state)
        log.info(f"{self.name} state changed", state=state)
        if self.writeback.write_reference(
            record.kantata_id, record, self.writeback.success_reference(record), run_id, log
        ):
            result.counts["state-written"] += 1
            if self.engine.on_invoice is not None:
                self.engine.on_invoice(record.kantata_id, "state-written", state, None)
        if state == "paid":
            self._record_payment(record, run_id, log)

    def _as_kantata_asks(
        self, invoice: dict[str, Any], record: InvoiceRecord, run_id: str, log: Any
    ) -> bool:
        """A target invoice that differs from the record may still be exactly what Kantata
        asks for now (the record is older than the target, e.g. a restored state file): then
        it is synced, and the record is brought up to date. Only one matching neither is a hand
        edit. Costs one Kantata request, only for an invoice that differs from its record."""
        try:
            decoded = decode_invoices(self.kantata.get_invoices([record.kantata_id]))
        except ApiError as exc:
            log.warning("could not read the Kantata invoice to compare", error=str(exc))
            return False
        inv = next((d for d in decoded if d.id == record.kantata_id), None)
        if not isinstance(inv, KantataInvoice) or inv.draft or inv.is_cancelled:
            return False
        try:
            doc = to_ledger(inv, self.profile)
        except MappingError:
            return False
        if not self.target.as_asked(doc, invoice):
            return False
        record.total_minor = doc.total_minor
        record.balance_in_cents = doc.balance_in_cents
        record.fingerprint = doc.fingerprint()
        record.target_lines = None
        remember_kantata(record, inv)
        self.store.save_invoice(
            record,
            run_id=run_id,
            event="noko-as-kantata",
            detail=f"{self.name} invoice {record.target_id} differs from the record but is as "
            "Kantata asks; record brought up to date",
        )
        log.info(f"{self.name} invoice differs from the record but is as Kantata asks")
        return True

    def _drift(self, invoice: dict[str, Any], record: InvoiceRecord) -> str | None:
        """What changed by hand in the target since the push, or None. A change of state (a payment)
        or of `updated_at` alone is not drift."""
        problems = []
        if record.total_minor is not None and record.exponent is not None:
            got = invoice.get("total_amount")
            try:
                minor = to_minor(str(got), record.exponent)
            except ValueError:
                minor = None
            if minor != record.total_minor:
                shown = f"{got!r}" if minor is None else _fmt_total(minor, record)
                problems.append(f"total {shown}, pushed {_fmt_total(record.total_minor, record)}")
        if record.target_lines is not None:
            keys = [str(key) for key in json.loads(record.target_lines)]
            problems += self.target.line_drift(invoice, keys)
        if not problems:
            return None
        return (
            f"{self.name} invoice {record.target_id} was changed by hand ({'; '.join(problems)}); "
            "it is left as it is: run `kantata-sync reconcile --apply` or "
            f"`kantata-sync retry {record.kantata_id} --force` to restore the Kantata version, "
            f"or `kantata-sync resolve {record.kantata_id}` to keep the hand edit"
        )

    def _record_payment(self, record: InvoiceRecord, run_id: str, log: Any) -> None:
        """Optionally mirror the target's payment in full as a Kantata external payment, once."""
        if not self.settings.record_payments or record.payment_recorded_at is not None:
            return
        if record.kantata_status != "new" or record.workspace_id is None:
            return
        if record.total_minor is None:
            return
        try:
            # In full: Kantata records the invoice's balance, whatever amount is named.
            self.kantata.record_external_payment(record.kantata_id, record.workspace_id)
        except PermanentApiError as exc:
            # Kantata refuses a second payment: the invoice is no longer pending.
            log.info("Kantata did not take the external payment", error=str(exc))
        except TransientApiError as exc:
            log.warning(
                "recording the payment in Kantata failed; retried next cycle", error=str(exc)
            )
            record.target_state = "unpaid-pending-payment-record"
            self.store.save_invoice(record, run_id=run_id)
            return
        record.payment_recorded_at = self.clock()
        record.kantata_status = "accepted payment"
        self.store.save_invoice(
            record, run_id=run_id, event="payment-recorded", detail="external payment in Kantata"
        )
