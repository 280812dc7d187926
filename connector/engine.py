"""One sync cycle: read -> map -> plan -> push -> verify -> write back -> checkpoint.

Reading: Kantata invoices updated after `cursor - lookback`, in `id:asc` order over that fixed
lower bound. In that order an invoice updated during the scan keeps its place and new invoices
come at the end, so page numbers never skip a row; a row that disappears mid-scan (a deleted
draft) is detected by the shrinking `count` and the scan is read again. The cursor then moves
to the newest `updated_at` handled, but never past the scan's start minus a clock-skew margin.

Writing: each invoice is handled by one worker at a time. Before any Noko create the intent is
committed to the store (stage `pushing`); after Noko answers, the Noko id (stage `pushed`);
after the Kantata write-back, `synced`. A process killed anywhere resumes from the stage it
left, finding what Noko already holds by its natural key instead of creating it twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog

from connector.errors import ApiError, PermanentApiError, TransientApiError
from connector.kantata import ExternalReferenceWrite, KantataClient
from connector.noko import NokoClient
from connector.push import DuplicateInNokoError, NokoPusher
from connector.store import InvoiceRecord, Store
from mappings.errors import MappingError
from mappings.kantata import DecodedInvoice, KantataInvoice, UndecodableInvoice, decode_invoices
from mappings.ledger import LedgerDocument
from mappings.money import format_money
from mappings.profile import Profile
from mappings.to_ledger import reference_for_id, to_ledger
from mappings.to_noko import check_totals, plan_invoice

Outcome = Literal[
    "pushed", "unchanged", "skipped", "failed", "waiting", "repaired", "would-push", "stopped"
]
SERVICE_MODEL = "invoice"
MAX_SCAN_PASSES = 3


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EngineSettings:
    service_name: str = "noko"
    workers: int = 8
    lookback: timedelta = timedelta(minutes=5)
    clock_skew: timedelta = timedelta(minutes=1)
    retry_initial_delay: float = 2.0
    retry_max_delay: float = 6 * 3600.0
    per_page: int = 200
    noko_base_url: str = "https://api.nokotime.com/v2"


@dataclass
class CycleResult:
    run_id: str
    kind: str
    outcome: str = "ok"
    counts: Counter[str] = field(default_factory=Counter)
    failed: dict[str, str] = field(default_factory=dict)
    cursor_before: datetime | None = None
    cursor_after: datetime | None = None
    duration: float = 0.0
    pages: int = 0
    error: str | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.outcome == "ok" and not self.failed else 1


@dataclass
class _Scan:
    """Bookkeeping of one cycle's read of Kantata."""

    max_updated: datetime | None = None
    seen: dict[str, datetime] = field(default_factory=dict)
    shrank: bool = False
    complete: bool = False


class SyncEngine:
    """Joins the Kantata client, the pure mapping, the Noko pusher and the state store."""

    def __init__(
        self,
        *,
        kantata: KantataClient,
        noko: NokoClient,
        store: Store,
        profile: Profile,
        settings: EngineSettings,
        clock: Callable[[], datetime] = utcnow,
        stop: threading.Event | None = None,
    ) -> None:
        self.kantata = kantata
        self.noko = noko
        self.store = store
        self.profile = profile
        self.settings = settings
        self.clock = clock
        self.stop = stop or threading.Event()
        self.pusher = NokoPusher(noko)
        self.log = structlog.get_logger("kantata_sync.engine")
        self._id_locks: dict[str, threading.Lock] = {}
        self._id_locks_guard = threading.Lock()
        self.on_progress: Callable[[Counter[str]], None] | None = None

    # ================================================================== cycle

    def run_cycle(
        self,
        kind: Literal["sync", "backfill"] = "sync",
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        dry_run: bool = False,
        only_ids: Iterable[str] | None = None,
        force: bool = False,
    ) -> CycleResult:
        """Work through everything changed up to now (or the backfill window)."""
        run_id = uuid.uuid4().hex[:12]
        log = self.log.bind(run_id=run_id, kind=kind)
        started = time.monotonic()
        cursor = self.store.get_cursor()
        result = CycleResult(run_id, kind, cursor_before=cursor, cursor_after=cursor)
        run = None if dry_run else self.store.start_run(run_id, kind, cursor)
        scan_start = self.clock()
        if kind == "sync":
            lower = None if cursor is None else cursor - self.settings.lookback
        else:
            lower = None if since is None else since - timedelta(seconds=1)
        log.info(
            "cycle started",
            updated_after=lower.isoformat() if lower else None,
            until=until.isoformat() if until else None,
            dry_run=dry_run,
        )
        scan = _Scan()
        try:
            with ThreadPoolExecutor(
                max_workers=self.settings.workers, thread_name_prefix="sync"
            ) as pool:
                runner = _Runner(self, pool, run_id, result, dry_run, force, log)
                if only_ids is not None:
                    runner.submit_all(self._fetch_by_id(list(only_ids)), scan, until=None)
                else:
                    self._scan(runner, scan, lower, until, log)
                    if not self.stop.is_set():
                        retry = [
                            r.kantata_id
                            for r in self.store.retry_candidates(self.clock())
                            if r.kantata_id not in scan.seen
                        ]
                        if retry:
                            log.info("retrying earlier failures", invoices=len(retry))
                            runner.submit_all(self._fetch_by_id(retry), scan, until=None)
                runner.drain()
        except ApiError as exc:
            result.outcome = "aborted"
            result.error = f"reading Kantata failed: {exc}"
            log.error("cycle aborted", error=str(exc))
        if self.stop.is_set() and result.outcome == "ok":
            result.outcome = "interrupted"
            result.error = "stopped by a signal; the next start continues where this one stopped"

        if (
            result.outcome == "ok"
            and scan.complete
            and not dry_run
            and only_ids is None
            and (kind == "sync" or until is None)
        ):
            new_cursor = self._next_cursor(cursor, scan, scan_start)
            if new_cursor is not None and (cursor is None or new_cursor > cursor):
                self.store.set_cursor(new_cursor)
                result.cursor_after = new_cursor
        result.duration = time.monotonic() - started
        if run is not None:
            run.outcome = (
                result.outcome
                if not result.failed
                else ("failed" if result.outcome == "ok" else result.outcome)
            )
            run.seen = sum(result.counts.values())
            run.pushed = result.counts["pushed"]
            run.unchanged = result.counts["unchanged"] + result.counts["repaired"]
            run.skipped = result.counts["skipped"]
            run.failed = len(result.failed)
            run.pages = result.pages
            run.cursor_after = result.cursor_after
            run.error = result.error
            self.store.finish_run(run)
        log.info(
            "cycle finished",
            outcome=result.outcome,
            duration_s=round(result.duration, 3),
            failed=len(result.failed),
            **{k.replace("-", "_"): v for k, v in sorted(result.counts.items())},
        )
        return result

    def _next_cursor(
        self, cursor: datetime | None, scan: _Scan, scan_start: datetime
    ) -> datetime | None:
        signpost = scan_start - self.settings.clock_skew
        newest = scan.max_updated
        if newest is None:
            return cursor
        return min(newest, signpost)

    def _scan(
        self,
        runner: _Runner,
        scan: _Scan,
        lower: datetime | None,
        until: datetime | None,
        log: Any,
    ) -> None:
        for attempt in range(1, MAX_SCAN_PASSES + 1):
            scan.shrank = False
            previous_count: int | None = None
            for page in self.kantata.iter_invoice_pages(
                updated_after=lower, per_page=self.settings.per_page
            ):
                runner.result.pages += 1
                if previous_count is not None and page.count < previous_count:
                    scan.shrank = True
                previous_count = page.count
                runner.submit_all(decode_invoices(page.body), scan, until=until)
                if self.stop.is_set():
                    return
            if not scan.shrank:
                scan.complete = True
                return
            log.info("invoices vanished during the scan; reading again", attempt=attempt)
        scan.complete = False
        log.warning("the invoice list kept shrinking during the scan; the cursor stays put")

    def _fetch_by_id(self, ids: list[str]) -> Iterator[DecodedInvoice]:
        for start in range(0, len(ids), 200):
            chunk = ids[start : start + 200]
            body = self.kantata.get_invoices(chunk)
            decoded = decode_invoices(body)
            found = {inv.id for inv in decoded}
            yield from decoded
            for missing in chunk:
                if missing not in found:
                    self._vanished(missing)

    def _vanished(self, kantata_id: str) -> None:
        record = self.store.get_invoice(kantata_id)
        if record is None or record.status in ("synced", "skipped"):
            return
        if record.noko_invoice_id is None and record.stage != "pushed":
            record.status = "skipped"
            record.skip_reason = "deleted in Kantata"
            record.next_attempt_at = None
            self.store.save_invoice(record, event="vanished", detail="no longer in Kantata")

    # ================================================================== one invoice

    def lock_for(self, kantata_id: str) -> threading.Lock:
        with self._id_locks_guard:
            lock = self._id_locks.get(kantata_id)
            if lock is None:
                lock = self._id_locks[kantata_id] = threading.Lock()
            return lock

    def handle(
        self, inv: DecodedInvoice, run_id: str, *, dry_run: bool = False, force: bool = False
    ) -> tuple[Outcome, str | None]:
        """Bring one invoice to its goal state; returns the outcome and, if failed, why."""
        with self.lock_for(inv.id):
            log = self.log.bind(run_id=run_id, kantata_invoice_id=inv.id)
            record = self.store.get_invoice(inv.id)
            try:
                return self._handle(inv, record, run_id, log, dry_run, force)
            except (TransientApiError, PermanentApiError, DuplicateInNokoError) as exc:
                # Errors outside the push itself (a write-back of a failure, a store race).
                log.warning("invoice failed", error=str(exc))
                return "failed", str(exc)

    def _handle(
        self,
        inv: DecodedInvoice,
        record: InvoiceRecord | None,
        run_id: str,
        log: Any,
        dry_run: bool,
        force: bool,
    ) -> tuple[Outcome, str | None]:
        now = self.clock()
        if isinstance(inv, UndecodableInvoice):
            if inv.draft is True or (inv.status or "").strip().lower() == "cancelled":
                reason = "draft" if inv.draft else "cancelled"
                return self._skip(inv.id, record, reason, run_id, dry_run, inv.updated_at)
            return self._fail_unmappable(
                inv.id,
                record,
                inv.source_fingerprint,
                inv.updated_at,
                inv.error,
                run_id,
                log,
                dry_run,
                force,
            )
        if inv.draft:
            return self._skip(inv.id, record, "draft", run_id, dry_run, inv.updated_at)
        if inv.is_cancelled:
            return self._skip(inv.id, record, "cancelled", run_id, dry_run, inv.updated_at)
        try:
            doc = to_ledger(inv, self.profile)
        except MappingError as error:
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
        fingerprint = doc.fingerprint()

        if record is not None and record.stage == "" and record.status == "synced":
            if record.fingerprint == fingerprint:
                if self._reference_in_place(inv, record):
                    return "unchanged", None
                if dry_run:
                    return "would-push", None
                self._write_success(inv, record, run_id, log)
                return "repaired", None
            return self._changed_after_sync(inv, doc, record, run_id, log, dry_run)

        if (
            record is not None
            and record.status == "failed"
            and not force
            and record.source_fingerprint == inv.source_fingerprint
            and record.fingerprint == fingerprint
            and (record.next_attempt_at is None or record.next_attempt_at > now)
        ):
            return "waiting", record.last_error or "failed earlier"

        if dry_run:
            return "would-push", None
        return self._push(inv, doc, fingerprint, record, run_id, log)

    # ------------------------------------------------------------------ outcomes

    def _skip(
        self,
        kantata_id: str,
        record: InvoiceRecord | None,
        reason: str,
        run_id: str,
        dry_run: bool,
        updated_at: datetime | None,
    ) -> tuple[Outcome, str | None]:
        if record is not None and (record.noko_invoice_id is not None or record.stage):
            # Already in Noko: cancellation after sync is the lifecycle's business, not a skip.
            return self._synced_then_left(kantata_id, record, reason, run_id, dry_run)
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
        self.store.save_invoice(record, run_id=run_id, event="skipped", detail=reason)
        return "skipped", None

    def _synced_then_left(
        self, kantata_id: str, record: InvoiceRecord, reason: str, run_id: str, dry_run: bool
    ) -> tuple[Outcome, str | None]:
        message = (
            f"became {reason} in Kantata after it was pushed to Noko invoice "
            f"{record.noko_invoice_id}; review the Noko invoice"
        )
        if dry_run:
            return "failed", message
        if record.status != "conflict" or record.last_error != message:
            record.status = "conflict"
            record.last_error = message
            record.error_kind = "lifecycle"
            self.store.save_invoice(record, run_id=run_id, event="conflict", detail=message)
        return "failed", message

    def _changed_after_sync(
        self,
        inv: KantataInvoice,
        doc: LedgerDocument,
        record: InvoiceRecord,
        run_id: str,
        log: Any,
        dry_run: bool,
    ) -> tuple[Outcome, str | None]:
        message = (
            f"changed in Kantata after it was synced (Noko invoice {record.noko_invoice_id}, "
            f"now {format_money(doc.total_minor, doc.exponent, doc.currency)}); "
            "review the Noko invoice"
        )
        if dry_run:
            return "failed", message
        if record.status != "conflict" or record.last_error != message:
            record.status = "conflict"
            record.last_error = message
            record.error_kind = "changed"
            record.source_fingerprint = inv.source_fingerprint
            self.store.save_invoice(record, run_id=run_id, event="conflict", detail=message)
        log.warning("invoice changed after sync", error=message)
        return "failed", message

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
        if record is not None and record.noko_invoice_id is not None:
            # It is in Noko already; a later edit made it unmappable.
            record.status = "conflict"
        else:
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
        self._write_failure(kantata_id, record, message, run_id, log)
        return "failed", message

    def _fail(
        self,
        record: InvoiceRecord,
        kind: str,
        message: str,
        run_id: str,
        log: Any,
        *,
        retry: bool,
    ) -> tuple[Outcome, str | None]:
        record.attempts += 1
        record.last_error = message
        record.error_kind = kind
        if record.status != "conflict":
            record.status = "failed"
        if retry:
            delay = min(
                self.settings.retry_initial_delay * (2 ** max(record.attempts - 1, 0)),
                self.settings.retry_max_delay,
            )
            record.next_attempt_at = self.clock() + timedelta(seconds=delay)
        else:
            record.next_attempt_at = None
        self.store.save_invoice(record, run_id=run_id, event="failed", detail=f"{kind}: {message}")
        log.warning("invoice failed", error_kind=kind, error=message, attempts=record.attempts)
        return "failed", message

    # ------------------------------------------------------------------ push

    def _push(
        self,
        inv: KantataInvoice,
        doc: LedgerDocument,
        fingerprint: str,
        record: InvoiceRecord | None,
        run_id: str,
        log: Any,
    ) -> tuple[Outcome, str | None]:
        if record is not None and record.stage == "pushed" and record.fingerprint == fingerprint:
            return self._write_success(inv, record, run_id, log)

        plan = plan_invoice(doc)
        recovering = record is not None and record.stage in ("pushing", "pushed")
        record = record or self.store.new_invoice(inv.id)
        record.stage = "pushing"
        if record.status != "conflict":
            record.status = "pending"
        record.reference = plan.reference
        record.fingerprint = fingerprint
        record.source_fingerprint = inv.source_fingerprint
        record.currency = doc.currency
        record.exponent = doc.exponent
        record.total_minor = doc.total_minor
        record.balance_in_cents = doc.balance_in_cents
        record.kantata_updated_at = inv.updated_at
        record.skip_reason = None
        self.store.save_invoice(
            record,
            run_id=run_id,
            event="push-started",
            detail=f"{plan.reference}: {len(plan.expenses)} lines, "
            f"{format_money(doc.total_minor, doc.exponent, doc.currency)}"
            + (" (recovering an earlier attempt)" if recovering else ""),
        )
        try:
            pushed = self.pusher.push(plan, recovering=recovering)
        except TransientApiError as exc:
            return self._fail(record, "transient", str(exc), run_id, log, retry=True)
        except PermanentApiError as exc:
            outcome = self._fail(record, "permanent", str(exc), run_id, log, retry=False)
            self._write_failure(inv.id, record, f"Noko refused the invoice: {exc}", run_id, log)
            return outcome
        except DuplicateInNokoError as exc:
            record.status = "conflict"
            return self._fail(record, "duplicate", str(exc), run_id, log, retry=False)

        noko_invoice = pushed.invoice
        noko_id = _int(noko_invoice.get("id"))
        if noko_id is None:
            return self._fail(
                record, "permanent", "Noko's answer has no invoice id", run_id, log, retry=True
            )
        log = log.bind(noko_invoice_id=noko_id)
        record.noko_invoice_id = noko_id
        record.noko_url = _invoice_link(noko_invoice, self.settings.noko_base_url, noko_id)
        record.noko_state = str(noko_invoice.get("state") or "") or None
        if pushed.expense_ids:
            record.noko_lines = json.dumps(pushed.expense_ids, sort_keys=True)
        problems = check_totals(plan, noko_invoice)
        if problems:
            record.stage = ""
            message = "Noko's totals differ from Kantata's: " + "; ".join(problems)
            outcome = self._fail(record, "verify", message, run_id, log, retry=False)
            self._write_failure(inv.id, record, message, run_id, log)
            return outcome
        record.stage = "pushed"
        self.store.save_invoice(
            record,
            run_id=run_id,
            event="pushed",
            detail=f"Noko invoice {noko_id}"
            + (" (found from an earlier attempt)" if pushed.adopted else "")
            + (f", {pushed.reused} expenses reused" if pushed.reused else "")
            + (f", {pushed.deleted} orphans removed" if pushed.deleted else ""),
        )
        log.info("pushed to Noko", reference=plan.reference, adopted=pushed.adopted)
        return self._write_success(inv, record, run_id, log)

    # ------------------------------------------------------------------ Kantata write-back

    def _success_reference(self, record: InvoiceRecord) -> ExternalReferenceWrite:
        total = (
            format_money(record.total_minor, record.exponent, record.currency)
            if record.total_minor is not None and record.exponent is not None and record.currency
            else ""
        )
        return ExternalReferenceWrite(
            service_name=self.settings.service_name,
            service_model=SERVICE_MODEL,
            service_model_ref=str(record.noko_invoice_id),
            status="successful",
            external_link=record.noko_url,
            external_status=record.noko_state,
            external_message=f"Noko invoice {record.reference} for {total}".strip(),
        )

    def _reference_in_place(self, inv: KantataInvoice, record: InvoiceRecord) -> bool:
        current = inv.reference_for(self.settings.service_name)
        if current is None:
            # References were not included (or an older Kantata): trust our own record.
            return bool(record.writeback_hash) and not inv.external_references
        wanted = self._success_reference(record)
        return (
            current.status == "successful"
            and current.service_model_ref == wanted.service_model_ref
            and (not wanted.external_link or current.external_link == wanted.external_link)
        )

    def _write_success(
        self, inv: KantataInvoice, record: InvoiceRecord, run_id: str, log: Any
    ) -> tuple[Outcome, str | None]:
        reference = self._success_reference(record)
        try:
            self.kantata.write_external_reference(inv.id, reference)
        except (TransientApiError, PermanentApiError) as exc:
            record.stage = "pushed"
            return self._fail(
                record,
                "writeback",
                f"in Noko as invoice {record.noko_invoice_id}, but writing the Kantata "
                f"reference failed: {exc}",
                run_id,
                log,
                retry=True,
            )
        record.stage = ""
        record.status = "synced"
        record.attempts = 0
        record.last_error = None
        record.error_kind = None
        record.next_attempt_at = None
        record.synced_at = self.clock()
        record.writeback_hash = _hash_reference(reference)
        self.store.save_invoice(
            record, run_id=run_id, event="synced", detail=f"reference {reference.external_link}"
        )
        return "pushed", None

    def _write_failure(
        self, kantata_id: str, record: InvoiceRecord, message: str, run_id: str, log: Any
    ) -> None:
        reference = ExternalReferenceWrite(
            service_name=self.settings.service_name,
            service_model=SERVICE_MODEL,
            service_model_ref=str(record.noko_invoice_id)
            if record.noko_invoice_id is not None
            else (record.reference or reference_for_id(kantata_id, self.profile)),
            status="failed",
            external_link=record.noko_url,
            external_message=message[:1000],
        )
        digest = _hash_reference(reference)
        if record.writeback_hash == digest:
            return
        try:
            self.kantata.write_external_reference(kantata_id, reference)
        except ApiError as exc:
            log.warning("could not write the failure to Kantata", error=str(exc))
            return
        record.writeback_hash = digest
        self.store.save_invoice(record, run_id=run_id, event="reference-failed", detail=message)


class _Runner:
    """Feeds invoices to the worker pool: one in flight per invoice id, bounded queue."""

    def __init__(
        self,
        engine: SyncEngine,
        pool: ThreadPoolExecutor,
        run_id: str,
        result: CycleResult,
        dry_run: bool,
        force: bool,
        log: Any,
    ) -> None:
        self.engine = engine
        self.pool = pool
        self.run_id = run_id
        self.result = result
        self.dry_run = dry_run
        self.force = force
        self.log = log
        self.slots = threading.BoundedSemaphore(engine.settings.workers * 4)
        self.futures: list[Future[None]] = []
        self.lock = threading.Lock()

    def submit_all(
        self, invoices: Iterable[DecodedInvoice], scan: _Scan, *, until: datetime | None
    ) -> None:
        for inv in invoices:
            if self.engine.stop.is_set():
                return
            updated = inv.updated_at
            if until is not None and updated is not None and updated >= until:
                continue
            previous = scan.seen.get(inv.id)
            if previous is not None and updated is not None and updated <= previous:
                continue  # the same version again (pages shifted): handled already
            if updated is not None:
                scan.seen[inv.id] = updated
                if scan.max_updated is None or updated > scan.max_updated:
                    scan.max_updated = updated
            else:
                scan.seen.setdefault(inv.id, datetime.min.replace(tzinfo=UTC))
            self.slots.acquire()
            self.futures.append(self.pool.submit(self._work, inv))

    def _work(self, inv: DecodedInvoice) -> None:
        try:
            if self.engine.stop.is_set():
                # Stopping: invoices not yet started are left for the next run, untouched.
                with self.lock:
                    self.result.counts["stopped"] += 1
                return
            try:
                outcome, error = self.engine.handle(
                    inv, self.run_id, dry_run=self.dry_run, force=self.force
                )
            except Exception as exc:  # one invoice must never stop the others
                self.log.exception("unexpected error on one invoice", kantata_invoice_id=inv.id)
                outcome, error = "failed", f"unexpected error: {type(exc).__name__}: {exc}"
            with self.lock:
                self.result.counts[outcome] += 1
                if outcome in ("failed", "waiting"):
                    self.result.failed[inv.id] = error or outcome
                else:
                    self.result.failed.pop(inv.id, None)
                progress = self.engine.on_progress
                if progress is not None:
                    progress(self.result.counts)
        finally:
            self.slots.release()

    def drain(self) -> None:
        for future in self.futures:
            future.result()
        self.futures.clear()


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _invoice_link(invoice: dict[str, Any], base_url: str, noko_id: int) -> str:
    url = invoice.get("url")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return url
    return f"{base_url.rstrip('/')}/invoices/{noko_id}"


def _hash_reference(reference: ExternalReferenceWrite) -> str:
    blob = json.dumps(dataclasses.asdict(reference), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]
