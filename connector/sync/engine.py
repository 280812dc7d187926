"""The sync engine: one Kantata invoice at a time brought to its goal state in the target.

The engine holds its parts: the cycle (`cycle.py`: scan, cursors, the worker pool), the
per-invoice decision (`decide.py`, pure), carrying it out in the target (`apply.py`), matching a
state file older than the target (`recover.py`), the target's changes (`changes.py`) and the
Kantata write-back (`writeback.py`). It reaches the accounting system only through
`connector.targets.base.Target`, its writes through `connector.sync.batch.Writes`.

Writing: each invoice is handled by one worker at a time. Before any create the intent is
committed to the store (stage `pushing`, on disk before the request); after the target answers,
its id (stage `pushed`); after the Kantata write-back, `synced`. Those two are not waited for:
they join the next commit. A process killed anywhere resumes from the last committed stage,
finding what the target already holds by its natural key instead of creating it twice.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from connector.errors import (
    AuthError,
    ConnectorError,
    LimitReachedError,
    PermanentApiError,
    TransientApiError,
)
from connector.kantata.client import KantataClient
from connector.state.store import InvoiceRecord, Store
from connector.sync.apply import Apply
from connector.sync.batch import Writes
from connector.sync.changes import Changes
from connector.sync.cycle import Cycle
from connector.sync.decide import Action, decide, decide_source
from connector.sync.late_writes import IN_DOUBT_MARK, LATE_WRITE_WINDOW, LateWrites
from connector.sync.outcome import CYCLE_OUTCOMES, CycleResult, EngineSettings, Outcome
from connector.sync.pool import InvoiceLocks
from connector.sync.records import Records, forget_target, remember_kantata
from connector.sync.recover import Recover
from connector.sync.values import describe as _describe
from connector.sync.writeback import Writeback
from connector.targets.base import DuplicateInTargetError, Target
from mappings.errors import MappingError
from mappings.kantata import DecodedInvoice, KantataInvoice, UndecodableInvoice, decode_invoices
from mappings.ledger import LedgerDocument
from mappings.money import to_minor
from mappings.profile import Profile
from mappings.to_ledger import to_ledger

__all__ = [
    "CYCLE_OUTCOMES",
    "IN_DOUBT_MARK",
    "LATE_WRITE_WINDOW",
    "CycleResult",
    "EngineSettings",
    "Outcome",
    "SyncEngine",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Halt:
    """Why the cycle takes no new invoice: a refused token, a spent request budget, or the
    state file failing under a worker. Set by the first worker that meets one."""

    def __init__(self, target_name: str, log: Any) -> None:
        self.target_name = target_name
        self.log = log
        self.event = threading.Event()
        self.auth_error: AuthError | None = None
        self.limit: LimitReachedError | None = None
        self.store_error: Exception | None = None

    def clear(self) -> None:
        self.event.clear()
        self.auth_error = None
        self.limit = None
        self.store_error = None

    def is_set(self) -> bool:
        return self.event.is_set()

    def store_failed(self, exc: Exception) -> None:
        if self.store_error is None:
            self.store_error = exc
            self.event.set()
            self.log.error("the state file failed; the cycle stops", error=str(exc))

    def api_stopped(self, exc: AuthError | LimitReachedError) -> None:
        """Stop the cycle: nothing works until the token is replaced (or the budget renews),
        and no invoice is to blame, so none is marked failed (each stays as it was)."""
        if self.event.is_set():
            return
        self.event.set()
        if isinstance(exc, AuthError):
            self.auth_error = exc
            self.log.error("token refused; the cycle stops", api=exc.service, error=str(exc))
        else:
            self.limit = exc
            self.log.warning(self.limit_message(), api=exc.service, error=str(exc))

    def limit_message(self) -> str:
        exc = self.limit
        if exc is None:
            return ""
        name = self.target_name if exc.service.lower() == self.target_name.lower() else exc.service
        resume = exc.resume_at
        when = resume.isoformat() if isinstance(resume, datetime) else str(resume or "")
        return (
            f"{name}'s daily limit reached; resumes after {when}"
            if when
            else f"{name}'s daily limit reached; the next cycle tries again"
        )


class SyncEngine:
    """Joins the Kantata client, the pure mapping, the target and the state store."""

    def __init__(
        self,
        *,
        kantata: KantataClient,
        target: Target,
        store: Store,
        profile: Profile,
        settings: EngineSettings,
        clock: Callable[[], datetime] = utcnow,
        stop: threading.Event | None = None,
    ) -> None:
        self.kantata = kantata
        self.target = target
        self.store = store
        self.profile = profile
        self.settings = settings
        self.clock = clock
        self.stop = stop or threading.Event()
        self.log = structlog.get_logger("kantata_sync.engine")
        # One invoice is worked on by one thread at a time; no code path holds two.
        self._id_locks = InvoiceLocks()
        self.on_progress: Callable[[Counter[str]], None] | None = None
        self.on_page: Callable[[int, int], None] | None = None
        """Called with (page number, Kantata's total count for the query) as pages arrive."""
        self.on_invoice: Callable[[str, str, str | None, DecodedInvoice | None], None] | None = None
        """Called once per invoice handled (`sync --json`): its Kantata id, the outcome, the
        detail, and the Kantata invoice read (None for what the target's changes brought)."""
        self.halt = Halt(target.name, self.log)
        self.writes = Writes(target, workers=settings.workers)
        # The parts read the time through the engine, so a clock set on it later (a test, the
        # benchmark moving time on) is the one every part sees.
        now = self.now
        self.records = Records(store, settings, now)
        self.late = LateWrites(target, store, now)
        self.writeback = Writeback(
            kantata=kantata,
            store=store,
            settings=settings,
            profile=profile,
            records=self.records,
            target_name=target.name,
            clock=now,
        )
        self.recover = Recover(
            target=target,
            store=store,
            settings=settings,
            profile=profile,
            records=self.records,
            writeback=self.writeback,
            log=self.log,
        )
        self.apply = Apply(
            target=target,
            writes=self.writes,
            store=store,
            settings=settings,
            records=self.records,
            writeback=self.writeback,
            recover=self.recover,
            late=self.late,
            log=self.log,
        )
        self.recover.apply = self.apply
        self.cycle = Cycle(self, self.apply)
        self.changes = Changes(self)

    def now(self) -> datetime:
        """The engine's clock, as every part reads it."""
        return self.clock()

    def halting(self) -> bool:
        """Whether invoices not yet started must be left for the next cycle."""
        return self.stop.is_set() or self.halt.is_set()

    def _store_failed(self, exc: Exception) -> None:
        self.halt.store_failed(exc)

    def run_cycle(
        self,
        kind: Literal["sync", "backfill"] = "sync",
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        dry_run: bool = False,
        only_ids: Iterable[str] | None = None,
        force: bool = False,
        full_refresh: bool = False,
    ) -> CycleResult:
        """Work through everything changed up to now (or the backfill window); with
        `full_refresh`, a sync reads every invoice from the start instead of from the cursor."""
        return self.cycle.run(
            kind,
            since=since,
            until=until,
            dry_run=dry_run,
            only_ids=only_ids,
            force=force,
            full_refresh=full_refresh,
        )

    def note_stale_state(
        self, batch: Iterable[DecodedInvoice], records: dict[str, InvoiceRecord]
    ) -> None:
        self.recover.note_stale_state(batch, records)

    def record_failure(self, kantata_id: str, message: str, run_id: str) -> None:
        self.records.record_failure(kantata_id, message, run_id)

    # ================================================================== one invoice

    def lock_for(self, kantata_id: str) -> AbstractContextManager[None]:
        return self._id_locks.hold(kantata_id)

    def handle(
        self,
        inv: DecodedInvoice,
        run_id: str,
        *,
        dry_run: bool = False,
        force: bool = False,
        retry_now: bool = False,
        record: InvoiceRecord | Literal[False] | None = False,
    ) -> tuple[Outcome, str | None]:
        """Bring one invoice to its goal state; returns the outcome and, if failed, why.

        `record` is the invoice's stored record (None: none stored) when the caller read it
        and nothing can have written it since; by default it is read here."""
        with self.lock_for(inv.id):
            log = self.log.bind(run_id=run_id, kantata_invoice_id=inv.id)
            if record is False:
                record = self.store.get_invoice(inv.id)
            try:
                return self._handle(inv, record, run_id, log, dry_run, force, retry_now)
            except (AuthError, LimitReachedError) as exc:
                # Not this invoice's failure: it stays as it was; the cycle stops.
                self.halt.api_stopped(exc)
                return "stopped", None
            except (TransientApiError, PermanentApiError, DuplicateInTargetError) as exc:
                # Errors outside the write itself (a lookup before a cancellation, say).
                log.warning("invoice failed", error=str(exc))
                if not dry_run:
                    self.record_failure(inv.id, str(exc), run_id)
                return "failed", str(exc)

    def _handle(
        self,
        inv: DecodedInvoice,
        record: InvoiceRecord | None,
        run_id: str,
        log: Any,
        dry_run: bool,
        force: bool,
        retry_now: bool = False,
    ) -> tuple[Outcome, str | None]:
        """Carry out what `decide_source`, then `decide`, ask for this invoice."""
        first = decide_source(inv, record, force=force)
        if first.action is Action.CONFLICT:
            assert record is not None
            return "conflict", record.last_error or "conflict"
        if first.action is Action.CANCEL:
            assert record is not None
            return self.apply.cancel(inv.id, record, run_id, log, dry_run)
        if first.action is Action.SKIP:
            return self.apply.skip(inv.id, record, first.reason, run_id, dry_run, inv.updated_at)
        if first.action is Action.SETTLED:
            return "skipped", None
        if isinstance(inv, UndecodableInvoice):
            assert first.action is Action.UNMAPPABLE
            error: MappingError = inv.error
        else:
            try:
                doc = to_ledger(inv, self.profile)
            except MappingError as exc:
                error = exc
            else:
                return self._handle_mapped(inv, doc, record, run_id, log, dry_run, force, retry_now)
        return self._fail_unmappable(
            inv.id,
            record,
            inv.source_fingerprint,
            inv.updated_at,
            error,
            run_id,
            log,
            dry_run,
            force,
        )

    def _fail_unmappable(
        self,
        kantata_id: str,
        record: InvoiceRecord | None,
        source_fingerprint: str,
        updated_at: datetime | None,
        error: MappingError,
        run_id: str,
        log: Any,
        dry_run: bool,
        force: bool,
    ) -> tuple[Outcome, str | None]:
        message = str(error)
        if dry_run:
            return "failed", message
        if (
            record is not None
            and record.status == "failed"
            and record.source_fingerprint == source_fingerprint
            and record.last_error == message
            and not force
        ):
            return "waiting", message
        # Also when it is in the target already (a later edit made it unmappable): failed, not
        # a conflict, so that fixing the field in Kantata is enough to update it.
        record = record or self.store.new_invoice(kantata_id)
        record.status = "failed"
        record.attempts += 1
        record.last_error = message
        record.error_kind = "mapping"
        record.next_attempt_at = None
        record.source_fingerprint = source_fingerprint
        record.kantata_updated_at = updated_at
        self.store.save_invoice(record, run_id=run_id, event="failed", detail=message)
        log.warning("invoice cannot be mapped", error=message)
        self.writeback.write_failure(kantata_id, record, message, run_id, log)
        return "failed", message

    def _handle_mapped(
        self,
        inv: KantataInvoice,
        doc: LedgerDocument,
        record: InvoiceRecord | None,
        run_id: str,
        log: Any,
        dry_run: bool,
        force: bool,
        retry_now: bool,
    ) -> tuple[Outcome, str | None]:
        fingerprint = doc.fingerprint()
        stale = self.recover.state_may_be_stale(inv, record)
        writeback = self.writeback
        while True:
            decision = decide(
                inv,
                record,
                fingerprint,
                stale=stale,
                reference_in_place=lambda r: writeback.reference_in_place(inv, r),
                now=self.clock(),
                force=force,
                retry_now=retry_now,
            )
            if decision.action is not Action.RECOVER:
                break
            # Before anything is decided from the record: it may be older than the target.
            found = self.recover.recover(inv, doc, fingerprint, record, run_id, log, dry_run, force)
            if isinstance(found, tuple):
                return found
            record, stale = found, False
        action = decision.action
        if action is Action.UNCHANGED:
            assert record is not None
            if record.kantata_status != inv.status and not dry_run:
                remember_kantata(record, inv)
                self.store.save_invoice(record, durable=False)
            return "unchanged", None
        if action is Action.WRITE_REFERENCE:
            assert record is not None
            if dry_run:
                return "would-update", "reference only"
            remember_kantata(record, inv)
            # What the write-back did is the outcome: a refused or failed one is a failure.
            written, why = writeback.write_success(inv, record, run_id, log)
            return ("repaired", None) if written == "pushed" else (written, why)
        if action is Action.WAIT:
            assert record is not None
            return "waiting", record.last_error or "failed earlier"
        if action is Action.FINISH:
            assert record is not None
            return writeback.write_success(inv, record, run_id, log)
        if action is Action.UPDATE:
            assert record is not None
            if dry_run:
                return "would-update", _describe(doc)
            return self.apply.update(inv, doc, fingerprint, record, run_id, log, force)
        assert action is Action.PUSH
        if record is not None and decision.forget:
            forget_target(record, recover=decision.forget == "recover")
        if dry_run:
            return "would-push", _describe(doc)
        return self.apply.push(inv, doc, fingerprint, record, run_id, log)

    # ------------------------------------------------------------------ operator decisions

    def accept(self, kantata_id: str, run_id: str) -> str:
        """Resolve a conflict by keeping the target's invoice as it is and taking the current
        Kantata invoice as in step with it. Returns what was decided, for the operator."""
        name = self.target.name
        record = self.store.get_invoice(kantata_id)
        if record is None:
            raise ConnectorError(f"invoice {kantata_id} is not in the state database")
        if record.status != "conflict":
            return f"invoice {kantata_id} is {record.status}, not a conflict: nothing to resolve"
        decoded = decode_invoices(self.kantata.get_invoices([kantata_id]))
        found = next((d for d in decoded if d.id == kantata_id), None)
        if found is None and record.target_id is not None:
            # Deleted in Kantata, its target invoice paid: kept there as the operator decides.
            record.status = "skipped"
            record.skip_reason = (
                f"deleted in Kantata; {name} invoice {record.target_id} kept by an "
                "operator's decision"
            )
            decided = f"resolved by an operator: {record.last_error}"
            record.stage = ""
            record.attempts = 0
            record.last_error = None
            record.error_kind = None
            record.next_attempt_at = None
            self.store.save_invoice(record, run_id=run_id, event="resolved", detail=decided)
            return (
                f"invoice {kantata_id}: skipped (deleted in Kantata), {name} invoice kept as it is"
            )
        if found is None:
            raise ConnectorError(f"Kantata has no invoice {kantata_id}")
        if isinstance(found, UndecodableInvoice):
            raise ConnectorError(f"cannot resolve: {found.error}")
        current = self.target.get(record.target_id) if record.target_id is not None else None
        if found.draft or found.is_cancelled:
            record.status = "skipped"
            record.skip_reason = (
                f"{'draft' if found.draft else 'cancelled'} in Kantata; {name} invoice "
                f"{record.target_id} kept by an operator's decision"
            )
        else:
            try:
                doc = to_ledger(found, self.profile)
            except MappingError as exc:
                raise ConnectorError(f"cannot resolve: {exc}") from None
            record.status = "synced"
            record.fingerprint = doc.fingerprint()
        if current is not None and record.exponent is not None:
            try:
                record.total_minor = to_minor(str(current.get("total_amount")), record.exponent)
            except ValueError:
                record.total_minor = None
            record.target_state = str(current.get("state") or "") or record.target_state
        record.target_lines = None  # the target's lines as they are now are the accepted ones
        remember_kantata(record, found)
        record.stage = ""
        record.attempts = 0
        decided = f"resolved by an operator: {record.last_error}"
        record.last_error = None
        record.error_kind = None
        record.next_attempt_at = None
        self.store.save_invoice(record, run_id=run_id, event="resolved", detail=decided)
        log = self.log.bind(run_id=run_id, kantata_invoice_id=kantata_id)
        if record.target_id is not None:
            reference = self.writeback.success_reference(record)
            reference = dataclasses.replace(
                reference,
                external_message=f"Resolved by an operator; {name} invoice kept as it is",
            )
            self.writeback.write_reference(kantata_id, record, reference, run_id, log)
        return f"invoice {kantata_id}: {record.status}, {name} invoice kept as it is"
