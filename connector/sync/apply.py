"""Carrying out the engine's decision for one invoice in the target: push (create), update in
place, cancel; the verification of what the target answered; and what is recorded when it
does not go through (a conflict for people, a skip, a failure to map).

Writes go through `connector.sync.batch.Writes` (coalesced into the target's batches); what
each answers is the target's neutral `Written` / `Cancelled`, or one of the interface's errors.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from connector.errors import (
    ApiError,
    PermanentApiError,
    TransientApiError,
    WriteInDoubtError,
)
from connector.kantata.client import ExternalReferenceWrite
from connector.state.store import InvoiceRecord, Store
from connector.sync.batch import Writes
from connector.sync.late_writes import LateWrites
from connector.sync.outcome import EngineSettings, Outcome
from connector.sync.records import Records, forget_target, remember_kantata
from connector.sync.values import fmt_total as _fmt_total
from connector.sync.values import text_id as _id
from connector.sync.writeback import SERVICE_MODEL, Writeback
from connector.targets.base import (
    Cancel,
    DuplicateInTargetError,
    Target,
    TargetGoneError,
    TargetRefusedError,
    Write,
    Written,
)
from mappings.errors import MappingError
from mappings.kantata import KantataInvoice
from mappings.ledger import LedgerDocument
from mappings.money import format_money

if TYPE_CHECKING:
    from connector.sync.recover import Recover


class Apply:
    """Push, update and cancel one invoice in the target, and record how it went."""

    def __init__(
        self,
        *,
        target: Target,
        writes: Writes,
        store: Store,
        settings: EngineSettings,
        records: Records,
        writeback: Writeback,
        recover: Recover,
        late: LateWrites,
        log: Any,
    ) -> None:
        self.target = target
        self.name = target.name
        self.writes = writes
        self.store = store
        self.settings = settings
        self.records = records
        self.writeback = writeback
        self.recover = recover
        self.late = late
        self.log = log

    # ------------------------------------------------------------------ push

    def push(
        self,
        inv: KantataInvoice,
        doc: LedgerDocument,
        fingerprint: str,
        record: InvoiceRecord | None,
        run_id: str,
        log: Any,
    ) -> tuple[Outcome, str | None]:
        if record is not None and record.stage == "pushed" and record.fingerprint == fingerprint:
            return self.writeback.write_success(inv, record, run_id, log)

        recovering = record is not None and record.stage in ("pushing", "pushed")
        record = record or self.store.new_invoice(inv.id)
        record.stage = "pushing"
        if record.status != "conflict":
            record.status = "pending"
        record.reference = doc.reference
        record.fingerprint = fingerprint
        record.source_fingerprint = inv.source_fingerprint
        record.currency = doc.currency
        record.exponent = doc.exponent
        record.total_minor = doc.total_minor
        record.balance_in_cents = doc.balance_in_cents
        remember_kantata(record, inv)
        record.skip_reason = None
        self.store.save_invoice(
            record,
            run_id=run_id,
            event="push-started",
            detail=f"{doc.reference}: {len(doc.lines)} lines, "
            f"{format_money(doc.total_minor, doc.exponent, doc.currency)}"
            + (" (recovering an earlier attempt)" if recovering else "")
            + (f"; time as amounts: {doc.time_note}" if doc.time_note else ""),
        )
        if recovering:
            self.late.note_in_doubt()  # the earlier attempt's last request may still land
        named = self.recover.target_id_in_kantata(inv)
        try:
            written = self.writes.create(
                Write(
                    inv.id,
                    doc,
                    known_ids=() if named is None else (named,),
                    recovering=recovering,
                )
            )
        except TransientApiError as exc:
            if isinstance(exc, WriteInDoubtError):
                self.late.note_in_doubt()
            return self.records.fail(record, "transient", str(exc), run_id, log, retry=True)
        except MappingError as exc:
            return self._unfit(inv.id, record, exc, run_id, log)
        except PermanentApiError as exc:
            outcome = self.records.fail(record, "permanent", str(exc), run_id, log, retry=False)
            self.writeback.write_failure(
                inv.id, record, f"{self.name} refused the invoice: {exc}", run_id, log
            )
            return outcome
        except DuplicateInTargetError as exc:
            record.status = "conflict"
            return self.records.fail(record, "duplicate", str(exc), run_id, log, retry=False)

        target_id = written.target_id
        log = log.bind(target_invoice_id=target_id)
        record.target_id = target_id
        record.target_link = written.link
        record.target_state = written.state
        # The lines as pushed, for the hand-edit check; unknown for an adopted invoice.
        record.target_lines = None if written.lines is None else json.dumps(written.lines)
        mismatch = self.verify(doc, written, record, "", run_id, log)
        if mismatch is not None:
            return mismatch
        record.stage = "pushed"
        # Not waited for (nor is `synced` after the write-back): if both are lost in a crash,
        # the intent above is what stays, and recovery finds this invoice by reference.
        self.store.save_invoice(
            record,
            durable=False,
            run_id=run_id,
            event="pushed",
            detail=f"{self.name} invoice {target_id}{written.detail}",
        )
        log.info(f"pushed to {self.name}", reference=doc.reference, adopted=written.adopted)
        return self.writeback.write_success(inv, record, run_id, log)

    def verify(
        self,
        doc: LedgerDocument,
        written: Written,
        record: InvoiceRecord,
        when: str,
        run_id: str,
        log: Any,
    ) -> tuple[Outcome, str | None] | None:
        """None when the target's totals are Kantata's to the minor unit; else the recorded
        failure. A mismatch is not retried by itself: it needs a person (or a change in
        Kantata). An invoice this attempt has just created with wrong totals is deleted again,
        with what was made for it, so that no wrong total stays in the books."""
        if not written.problems:
            return None
        record.stage = ""
        name = self.name
        message = f"{when}{name}'s totals differ from Kantata's: " + "; ".join(written.problems)
        created = written.target_id if written.created else None
        if created is not None:
            try:
                removed = self.target.discard(doc.reference, created)
            except (ApiError, TargetRefusedError) as exc:
                message += (
                    f"; deleting {name} invoice {created} failed ({exc}): delete it in {name}, "
                    "then run retry"
                )
            else:
                forget_target(record, recover=False)
                message += (
                    f"; {name} invoice {created} and the {removed} expenses and time entries "
                    f"made for it were deleted again, so no wrong total is left in {name}"
                )
                log.warning("deleted an invoice created with wrong totals", target_id=created)
        outcome = self.records.fail(record, "verify", message, run_id, log, retry=False)
        self.writeback.write_failure(record.kantata_id, record, message, run_id, log)
        return outcome

    # ------------------------------------------------------------------ update

    def update(
        self,
        inv: KantataInvoice,
        doc: LedgerDocument,
        fingerprint: str,
        record: InvoiceRecord,
        run_id: str,
        log: Any,
        force: bool,
    ) -> tuple[Outcome, str | None]:
        """Bring the target's invoice up to date in place; the same id throughout."""
        assert record.target_id is not None
        target_id = record.target_id
        name = self.name
        log = log.bind(target_invoice_id=target_id)
        previous_total = record.total_minor
        record.stage = "updating"
        record.status = "pending"
        record.reference = doc.reference
        record.fingerprint = fingerprint
        record.currency = doc.currency
        record.exponent = doc.exponent
        record.total_minor = doc.total_minor
        record.balance_in_cents = doc.balance_in_cents
        remember_kantata(record, inv)
        self.store.save_invoice(
            record,
            run_id=run_id,
            event="update-started",
            detail=f"{name} invoice {target_id} to "
            f"{format_money(doc.total_minor, doc.exponent, doc.currency)}"
            + (" (forced)" if force else ""),
        )
        try:
            written = self.writes.update(Write(inv.id, doc, target_id=target_id, force=force))
        except TargetRefusedError as exc:
            current = exc.invoice
            if (
                current is not None
                and self.target.as_asked(doc, current)
                and not self.target.header_differs(doc, current)
            ):
                # Paid or locked, but already what Kantata asks for (the state file was older
                # than the target): nothing to change, so nothing refused.
                record.target_state = str(current.get("state") or "") or record.target_state
                record.target_lines = None
                record.stage = "pushed"
                self.store.save_invoice(
                    record,
                    run_id=run_id,
                    event="updated",
                    detail=f"{name} invoice {target_id} is {exc.code} and already as Kantata asks",
                )
                done, error = self.writeback.write_success(inv, record, run_id, log)
                return ("repaired", None) if done == "pushed" else (done, error)
            return self.conflict(
                record,
                "refused",
                f"changed in Kantata, but {name} invoice {target_id} is {exc.code} and cannot be "
                f"changed (Kantata now {format_money(doc.total_minor, doc.exponent, doc.currency)}"
                f", {name} {_fmt_total(previous_total, record)}): correct it in {name} by hand "
                f"(credit note), then run `kantata-sync resolve {inv.id}`",
                run_id,
                log,
            )
        except TargetGoneError:
            if force:
                # The operator asked for the Kantata version: push it again as a new invoice.
                forget_target(record, recover=True)
                return self.push(inv, doc, fingerprint, record, run_id, log)
            return self.conflict(
                record,
                "gone",
                f"{name} invoice {target_id} was deleted in {name}; run retry --force to push "
                f"the Kantata invoice again as a new {name} invoice",
                run_id,
                log,
            )
        except TransientApiError as exc:
            if isinstance(exc, WriteInDoubtError):
                self.late.note_in_doubt()
            return self.records.fail(record, "transient", str(exc), run_id, log, retry=True)
        except MappingError as exc:
            return self._unfit(inv.id, record, exc, run_id, log)
        except (PermanentApiError, DuplicateInTargetError) as exc:
            outcome = self.records.fail(record, "permanent", str(exc), run_id, log, retry=False)
            self.writeback.write_failure(
                inv.id, record, f"{name} refused the update: {exc}", run_id, log
            )
            return outcome
        if written.target_id and written.target_id != target_id:
            # The target refused the edit and made the invoice again (the old one voided): the
            # record and the Kantata reference follow the new one.
            record.target_id = target_id = written.target_id
            record.target_link = None
            log = log.bind(target_invoice_id=target_id)
        record.target_state = written.state or record.target_state
        record.target_link = written.link or record.target_link
        record.target_lines = None if written.lines is None else json.dumps(written.lines)
        mismatch = self.verify(doc, written, record, "after the update ", run_id, log)
        if mismatch is not None:
            return mismatch
        record.stage = "pushed"
        self.store.save_invoice(
            record,
            run_id=run_id,
            event="updated",
            detail=f"{name} invoice {target_id}: {written.detail}",
        )
        log.info(f"updated in {name}", detail=written.detail)
        done, error = self.writeback.write_success(inv, record, run_id, log)
        return ("updated", None) if done == "pushed" else (done, error)

    # ------------------------------------------------------------------ cancel

    def cancel(
        self,
        kantata_id: str,
        record: InvoiceRecord,
        run_id: str,
        log: Any,
        dry_run: bool,
        why: str = "cancelled",
        *,
        write_back: bool = True,
    ) -> tuple[Outcome, str | None]:
        """Cancelled (or back to draft, or deleted) in Kantata after it was pushed: take it out
        of the target's books when the target allows. `write_back` False: the Kantata invoice
        is gone, so no reference is written to it."""
        name = self.name
        if dry_run:
            return (
                "would-cancel",
                f"delete {name} invoice {record.target_id or record.reference}",
            )
        if record.target_id is None:
            # Pushing never finished: nothing may be left in the target, whatever stage.
            if record.reference:
                found = self.target.find_one(record.reference)
                if found is not None and _id(found.get("id")) is not None:
                    record.target_id = _id(found.get("id"))
            if record.target_id is None:
                if record.reference:
                    self.target.sweep(record.reference)
                record.stage = ""
                reason = {"returned to draft": "draft", "deleted": "deleted in Kantata"}.get(
                    why, "cancelled"
                )
                if not write_back:
                    record.status = "skipped"
                    record.skip_reason = reason
                    record.next_attempt_at = None
                    self.store.save_invoice(
                        record,
                        run_id=run_id,
                        event="skipped",
                        detail=f"{reason}; nothing in {name}",
                    )
                    return "skipped", None
                return self.skip(kantata_id, record, reason, run_id, False, None)
        target_id = record.target_id
        assert target_id is not None
        assert record.reference is not None
        log = log.bind(target_invoice_id=target_id)
        record.stage = "cancelling"
        self.store.save_invoice(
            record, run_id=run_id, event="cancel-started", detail=f"{name} invoice {target_id}"
        )
        gone = "deleted"
        try:
            cancelled = self.writes.cancel(Cancel(kantata_id, record.reference, target_id))
            gone = cancelled.state or gone  # the target's own word (Xero: VOIDED, DELETED)
        except TargetRefusedError as exc:
            return self.conflict(
                record,
                "lifecycle",
                f"{why} in Kantata, but {name} invoice {target_id} is {exc.code} and was left "
                f"untouched: void it in {name} (credit note or refund), then run "
                f"`kantata-sync resolve {kantata_id}`",
                run_id,
                log,
                write_back=write_back,
            )
        except TargetGoneError:
            pass  # gone already: out of the books as asked
        except TransientApiError as exc:
            return self.records.fail(record, "transient", str(exc), run_id, log, retry=True)
        except PermanentApiError as exc:
            return self.records.fail(record, "permanent", str(exc), run_id, log, retry=False)
        record.stage = ""
        record.status = "skipped"
        record.skip_reason = f"{why} in Kantata; {name} invoice {target_id} deleted"
        record.target_state = "deleted"
        record.last_error = None
        record.error_kind = None
        record.next_attempt_at = None
        self.store.save_invoice(
            record, run_id=run_id, event="cancelled", detail=f"{name} invoice {target_id} deleted"
        )
        log.info(f"cancelled: {name} invoice deleted", why=why)
        if not write_back:
            return "cancelled", None
        reference = ExternalReferenceWrite(
            service_name=self.settings.service_name,
            service_model=SERVICE_MODEL,
            service_model_ref=str(target_id),
            status="successful",
            external_status=gone,
            external_message=f"{why.capitalize()} in Kantata; {name} invoice {record.reference} "
            f"{gone.lower()}",
        )
        self.writeback.write_reference(kantata_id, record, reference, run_id, log)
        return "cancelled", None

    # ------------------------------------------------------------------ outcomes for people

    def conflict(
        self,
        record: InvoiceRecord,
        kind: str,
        message: str,
        run_id: str,
        log: Any,
        *,
        write_back: bool = True,
    ) -> tuple[Outcome, str | None]:
        record.status = "conflict"
        record.stage = ""
        record.error_kind = kind
        record.last_error = message
        record.next_attempt_at = None
        self.store.save_invoice(record, run_id=run_id, event="conflict", detail=message)
        log.warning("conflict", error_kind=kind, error=message)
        if write_back:
            self.writeback.write_failure(record.kantata_id, record, message, run_id, log)
        return "conflict", message

    def skip(
        self,
        kantata_id: str,
        record: InvoiceRecord | None,
        reason: str,
        run_id: str,
        dry_run: bool,
        updated_at: datetime | None,
    ) -> tuple[Outcome, str | None]:
        if (
            record is not None
            and record.target_state != "deleted"
            and record.status != "skipped"
            and (record.target_id is not None or record.stage)
        ):
            # In the target, yet a draft (again) or cancelled in Kantata: not for the books.
            log = self.log.bind(run_id=run_id, kantata_invoice_id=kantata_id)
            why = "returned to draft" if reason == "draft" else "cancelled"
            return self.cancel(kantata_id, record, run_id, log, dry_run, why=why)
        if dry_run or (
            record is not None and record.status == "skipped" and record.skip_reason == reason
        ):
            return "skipped", None
        record = record or self.store.new_invoice(kantata_id)
        record.status = "skipped"
        record.skip_reason = reason
        record.last_error = None
        record.next_attempt_at = None
        record.kantata_updated_at = updated_at
        # Lost in a crash, the skip is made again: the cursor moves only after it is written.
        self.store.save_invoice(
            record, durable=False, run_id=run_id, event="skipped", detail=reason
        )
        return "skipped", None

    def _unfit(
        self,
        kantata_id: str,
        record: InvoiceRecord,
        exc: MappingError,
        run_id: str,
        log: Any,
    ) -> tuple[Outcome, str | None]:
        """The target cannot hold the invoice exactly (a currency it has not enabled or
        rounds differently, an account or tax type it lacks): nothing was sent for it. Not
        retried by itself: the fix is in the target or the profile, then `retry`."""
        message = str(exc)
        outcome = self.records.fail(record, "unfit", message, run_id, log, retry=False)
        self.writeback.write_failure(
            kantata_id, record, f"{self.name} cannot hold this invoice: {message}", run_id, log
        )
        return outcome
