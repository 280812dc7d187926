"""One sync cycle: read -> map -> plan -> push -> verify -> write back -> checkpoint.

Reading: Kantata invoices updated after `cursor - lookback`, in `id:asc` order over that fixed
lower bound. In that order an invoice updated during the scan keeps its place and new invoices
come at the end, so page numbers never skip a row; a row that disappears mid-scan (a deleted
draft) is detected by the shrinking `count` and the scan is read again. After a complete scan
the cursor moves to Kantata's clock at the first page (its `Date` header) minus a clock-skew
margin, and never past this machine's clock at the start minus the same margin; without a
`Date`, to the newest `updated_at` handled. The page's stored records are read in one query.

Writing: each invoice is handled by one worker at a time. Before any Noko create the intent is
committed to the store (stage `pushing`, on disk before the request); after Noko answers, the
Noko id (stage `pushed`); after the Kantata write-back, `synced`. Those two are not waited for:
they join the next commit. A process killed anywhere resumes from the last committed stage,
finding what Noko already holds by its natural key instead of creating it twice.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog

from connector.errors import (
    ApiError,
    AuthError,
    ConnectorError,
    PermanentApiError,
    StateFileError,
    TransientApiError,
    WriteInDoubtError,
)
from connector.kantata.client import ExternalReferenceWrite, KantataClient
from connector.state.store import InvoiceRecord, Store, state_file_problem
from connector.sync.changes import NOKO_CURSOR, Changes
from connector.sync.cursor import Scan
from connector.sync.decide import IN_FLIGHT_STAGES, Action, decide, decide_source
from connector.sync.outcome import CYCLE_OUTCOMES, CycleResult, EngineSettings, Outcome
from connector.sync.pool import Runner
from connector.sync.values import describe as _describe
from connector.sync.values import done as _done
from connector.sync.values import fmt_total as _fmt_total
from connector.sync.values import minor as _minor
from connector.sync.values import text_id as _id
from connector.sync.writeback import SERVICE_MODEL
from connector.targets.base import Target
from connector.targets.noko.push import (
    DuplicateInNokoError,
    NokoGoneError,
    NokoPusher,
    NokoRefusedError,
    header_differs,
)
from mappings.errors import MappingError
from mappings.kantata import DecodedInvoice, KantataInvoice, UndecodableInvoice, decode_invoices
from mappings.ledger import LedgerDocument
from mappings.money import format_money, to_minor
from mappings.profile import Profile
from mappings.targets.noko import NokoInvoicePlan, check_totals, plan_invoice
from mappings.to_ledger import reference_for, reference_for_id, to_ledger

__all__ = ["CYCLE_OUTCOMES", "CycleResult", "EngineSettings", "Outcome", "SyncEngine"]

# When a Noko create was last left in doubt (no answer, or a process died mid-push): for a while
# after it, each cycle removes leftovers that such creates made after their invoice was done.
IN_DOUBT_MARK = "writes-in-doubt"
LATE_WRITE_WINDOW = timedelta(minutes=15)
MAX_SCAN_PASSES = 3
ID_LOCK_STRIPES = 1024


def utcnow() -> datetime:
    return datetime.now(UTC)


class SyncEngine(Changes):
    """Joins the Kantata client, the pure mapping, the Noko pusher and the state store."""

    def __init__(
        self,
        *,
        kantata: KantataClient,
        target: Target,
        pusher: NokoPusher,
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
        self.pusher = pusher
        self.log = structlog.get_logger("kantata_sync.engine")
        # One invoice is worked on by one thread at a time. A fixed set of locks, picked by the
        # id's hash, serves every id: nothing is kept per invoice, and no code path holds two.
        self._id_locks = tuple(threading.Lock() for _ in range(ID_LOCK_STRIPES))
        self.on_progress: Callable[[Counter[str]], None] | None = None
        self.on_page: Callable[[int, int], None] | None = None
        """Called with (page number, Kantata's total count for the query) as pages arrive."""
        self.on_invoice: Callable[[str, str, str | None, DecodedInvoice | None], None] | None = None
        """Called once per invoice handled (`sync --json`): its Kantata id, the outcome, the
        detail, and the Kantata invoice read (None for what Noko's changes brought)."""
        self._index = target.new_index(wanted=False)
        # A refused token (401/403) ends the cycle: set by the first worker that meets one;
        # the scan and the workers take no new invoice after it.
        self._auth_stop = threading.Event()
        self._auth_error: AuthError | None = None
        # The state file failing under a worker (a full disk) ends the cycle the same way.
        self._store_error: Exception | None = None

    def _store_failed(self, exc: Exception) -> None:
        if self._store_error is None:
            self._store_error = exc
            self._auth_stop.set()
            self.log.error("the state file failed; the cycle stops", error=str(exc))

    def _auth_refused(self, exc: AuthError) -> None:
        """Stop the cycle: nothing works until the token is replaced, and no invoice is to
        blame, so none is marked failed (each stays as it was, for the next cycle)."""
        if not self._auth_stop.is_set():
            self._auth_error = exc
            self._auth_stop.set()
            self.log.error("token refused; the cycle stops", api=exc.service, error=str(exc))

    def halting(self) -> bool:
        """Whether invoices not yet started must be left for the next cycle."""
        return self.stop.is_set() or self._auth_stop.is_set()

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
        full_refresh: bool = False,
    ) -> CycleResult:
        """Work through everything changed up to now (or the backfill window); with
        `full_refresh`, a sync reads every invoice from the start instead of from the cursor."""
        run_id = uuid.uuid4().hex[:12]
        log = self.log.bind(run_id=run_id, kind=kind)
        started = time.monotonic()
        cursor = self.store.get_cursor()
        result = CycleResult(run_id, kind, cursor_before=cursor, cursor_after=cursor)
        run = None if dry_run else self.store.start_run(run_id, kind, cursor)
        scan_start = self.clock()
        if kind == "sync":
            lower = None if cursor is None or full_refresh else cursor - self.settings.lookback
        else:
            lower = None if since is None else since - timedelta(seconds=1)
        log.info(
            "cycle started",
            updated_after=lower.isoformat() if lower else None,
            until=until.isoformat() if until else None,
            dry_run=dry_run,
        )
        scan = Scan()
        # A new state file knows nothing of what Noko holds: look before creating anything.
        self._index = self.target.new_index(
            wanted=cursor is None and self.store.get_cursor(NOKO_CURSOR) is None
        )
        self._auth_stop.clear()
        self._auth_error = None
        self._store_error = None
        try:
            with (
                structlog.contextvars.bound_contextvars(run_id=run_id),
                ThreadPoolExecutor(
                    max_workers=self.settings.workers, thread_name_prefix="sync"
                ) as pool,
            ):
                runner = Runner(self, pool, run_id, result, dry_run, force, log)
                # Invoices named by the operator are tried now, whatever their retry time.
                runner.retry_now = only_ids is not None
                if only_ids is not None:
                    runner.submit_all(self._fetch_by_id(list(only_ids), result), scan, until=None)
                else:
                    self._scan(runner, scan, lower, until, log)
                    if not self.halting():
                        retry = [
                            r.kantata_id
                            for r in self.store.retry_candidates(self.clock())
                            if r.kantata_id not in scan.seen
                        ]
                        if retry:
                            log.info("retrying earlier failures", invoices=len(retry))
                            runner.submit_all(self._fetch_by_id(retry, result), scan, until=None)
                runner.drain()
            if not dry_run and only_ids is None and not self.halting():
                try:
                    self._poll_noko(run_id, log, result)
                    self._sweep_late_writes(log)
                except AuthError as exc:
                    self._auth_refused(exc)
                except ApiError as exc:
                    # Pushes are done and recorded; payment states wait for the next cycle.
                    result.outcome = "degraded"
                    result.error = f"reading Noko's changes failed: {exc}"
                    log.error("reading Noko's changes failed", error=str(exc))
        except AuthError as exc:
            self._auth_refused(exc)
        except ApiError as exc:
            result.outcome = "aborted"
            result.error = f"reading Kantata failed: {exc}"
            log.error("cycle aborted", error=str(exc))
        if self._store_error is not None:
            # Nothing more can be recorded: what was committed stays, the cursor does not move,
            # and the next run continues from the intents on disk.
            raise StateFileError(state_file_problem(self._store_error, self.store.path))
        if self._auth_error is not None:
            # Exit 1 with one line naming the API and the fix; the cursor stays.
            result.auth_error = self._auth_error
            result.outcome = "aborted"
            result.error = (
                f"{self._auth_error.summary()}; the invoices not done are left as they were "
                "and the next sync continues"
            )
        if self.stop.is_set() and result.outcome == "ok":
            result.outcome = "interrupted"
            result.error = "stopped by a signal; the next start continues where this one stopped"

        if (
            result.outcome == "ok"
            and scan.complete
            and not dry_run
            and only_ids is None
            and (kind == "sync" or self._covers_from_cursor(cursor, lower, until))
        ):
            new_cursor = self._next_cursor(cursor, scan, scan_start)
            if new_cursor is not None and (cursor is None or new_cursor > cursor):
                self.store.set_cursor(new_cursor)
                result.cursor_after = new_cursor
        result.duration = time.monotonic() - started
        if run is not None:
            run.outcome = result.final_outcome
            run.seen = sum(result.counts.values())
            run.pushed = result.counts["pushed"]
            run.updated = result.counts["updated"]
            run.conflicts = result.conflicts
            run.unchanged = result.counts["unchanged"] + result.counts["repaired"]
            run.skipped = result.counts["skipped"]
            run.failed = result.failures
            run.pages = result.pages
            run.cursor_after = result.cursor_after
            run.error = result.error
            self.store.finish_run(run)
        log.info(
            "cycle finished",
            outcome=result.final_outcome,
            duration_s=round(result.duration, 3),
            failed_invoices=result.failures,
            conflict_invoices=result.conflicts,
            **{k.replace("-", "_"): v for k, v in sorted(result.counts.items())},
        )
        return result

    def _covers_from_cursor(
        self, cursor: datetime | None, lower: datetime | None, until: datetime | None
    ) -> bool:
        """Whether a backfill's window holds every change a sync would read from the cursor
        on (its lookback included), so that the cursor may move past them. A window starting
        later, or ending before now, leaves changes unread: the cursor stays where it is."""
        if until is not None:
            return False
        if lower is None:
            return True
        return cursor is not None and lower <= cursor - self.settings.lookback

    def _next_cursor(
        self, cursor: datetime | None, scan: Scan, scan_start: datetime
    ) -> datetime | None:
        """Where the next scan starts (before its lookback), after a complete scan.

        With Kantata's own clock at the first page, that moment minus the clock-skew margin
        (and never past this machine's clock at the start, minus the same): every invoice
        Kantata held then was read, whatever its `updated_at`, so the cursor moves on with time
        and a quiet cycle reads nothing once the lookback window holds no change. Without it,
        the newest `updated_at` read, never past this machine's clock minus the margin."""
        if scan.server_time is not None:
            return min(scan_start, scan.server_time) - self.settings.clock_skew
        signpost = scan_start - self.settings.clock_skew
        newest = scan.max_updated
        if newest is None:
            return cursor
        return min(newest, signpost)

    def _scan(
        self,
        runner: Runner,
        scan: Scan,
        lower: datetime | None,
        until: datetime | None,
        log: Any,
    ) -> None:
        for attempt in range(1, MAX_SCAN_PASSES + 1):
            scan.shrank = False
            previous_count: int | None = None
            unseen = 0
            noted = 0
            for page in self.kantata.iter_invoice_pages(
                updated_after=lower, per_page=self.settings.per_page
            ):
                runner.result.pages += 1
                if scan.server_time is None:
                    scan.server_time = page.server_time
                if self.on_page is not None:
                    self.on_page(page.page, page.count)
                if page.note is not None:
                    # At warning level once a pass: a server serving fewer rows than asked
                    # for disagrees on every page.
                    noted += 1
                    (log.warning if noted == 1 else log.info)(
                        "Kantata's paging signals disagree; reading on",
                        page=page.page,
                        detail=page.note,
                    )
                if previous_count is not None and page.count < previous_count:
                    scan.shrank = True
                previous_count = page.count
                unseen = page.unseen
                runner.submit_all(decode_invoices(page.body), scan, until=until)
                if self.halting():
                    return
            if unseen and not scan.shrank:
                # Rows Kantata counted were never served: what was read is handled, but the
                # cursor must not move past the rest.
                scan.complete = False
                log.warning(
                    "Kantata did not serve every invoice it counted; the cursor stays put",
                    unseen=unseen,
                )
                runner.result.error = (
                    f"Kantata counted {unseen} more invoice(s) than it served; "
                    "the cursor stays put until a scan reads them all"
                )
                return
            if not scan.shrank:
                scan.complete = True
                return
            log.info("invoices vanished during the scan; reading again", attempt=attempt)
        scan.complete = False
        log.warning("the invoice list kept shrinking during the scan; the cursor stays put")

    def _fetch_by_id(
        self, ids: list[str], result: CycleResult | None = None
    ) -> Iterator[DecodedInvoice]:
        for start in range(0, len(ids), 200):
            chunk = ids[start : start + 200]
            body = self.kantata.get_invoices(chunk)
            decoded = decode_invoices(body)
            found = {inv.id for inv in decoded}
            yield from decoded
            missing = [kid for kid in chunk if kid not in found]
            if missing and self._vanish_needs_proof(missing):
                # Asked again before anything in Noko is deleted for it: one answer that
                # leaves an invoice out is not proof that it is gone.
                again = {inv.id for inv in decode_invoices(self.kantata.get_invoices(missing))}
                missing = [kid for kid in missing if kid not in again]
            for kantata_id in missing:
                done = self._vanished(kantata_id, result.run_id if result else "")
                if done is not None and result is not None:
                    outcome, error = done
                    result.counts[outcome] += 1
                    if outcome in ("failed", "conflict"):
                        result.failed[kantata_id] = error or outcome
                    else:
                        result.failed.pop(kantata_id, None)

    def _vanish_needs_proof(self, kantata_ids: list[str]) -> bool:
        records = self.store.get_invoices(kantata_ids)
        return any(r.target_id is not None or r.stage for r in records.values())

    def _vanished(self, kantata_id: str, run_id: str = "") -> tuple[Outcome, str | None] | None:
        """A Kantata invoice asked for by id is gone (deleted in Kantata). Before its push it
        is simply skipped; after it, its Noko invoice goes as for a cancellation: deleted when
        Noko allows, a conflict when it is paid or locked."""
        with self.lock_for(kantata_id):
            record = self.store.get_invoice(kantata_id)
            if record is None or record.status == "skipped":
                return None
            log = self.log.bind(run_id=run_id, kantata_invoice_id=kantata_id)
            in_noko = (
                record.target_id is not None and record.target_state != "deleted"
            ) or record.stage in ("pushing", "pushed", "updating", "cancelling")
            if in_noko:
                if record.status == "conflict" and record.error_kind == "lifecycle":
                    return "conflict", record.last_error
                log.info("deleted in Kantata after its push; removing its Noko invoice")
                return self._cancel(
                    kantata_id, record, run_id, log, False, why="deleted", write_back=False
                )
            if record.status == "synced":
                return None
            record.status = "skipped"
            record.skip_reason = "deleted in Kantata"
            record.next_attempt_at = None
            self.store.save_invoice(record, event="vanished", detail="no longer in Kantata")
            return "skipped", None

    # ================================================================== one invoice

    def lock_for(self, kantata_id: str) -> threading.Lock:
        return self._id_locks[hash(kantata_id) % ID_LOCK_STRIPES]

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
            except AuthError as exc:
                # Not this invoice's failure: it stays as it was; the cycle stops.
                self._auth_refused(exc)
                return "stopped", None
            except (TransientApiError, PermanentApiError, DuplicateInNokoError) as exc:
                # Errors outside the push itself (a lookup before a cancellation, say).
                log.warning("invoice failed", error=str(exc))
                if not dry_run:
                    self.record_failure(inv.id, str(exc), run_id)
                return "failed", str(exc)

    def _retry_at(self, attempts: int) -> datetime:
        """Next try after `attempts` failures: a delay doubling from the initial one, capped."""
        delay = min(
            self.settings.retry_initial_delay * (2 ** max(attempts - 1, 0)),
            self.settings.retry_max_delay,
        )
        return self.clock() + timedelta(seconds=delay)

    @staticmethod
    def _forget_noko(record: InvoiceRecord, *, recover: bool) -> None:
        """The Noko invoice is gone: the next push makes a new one. With `recover`, that push
        first reuses or removes the expenses the old one left behind."""
        record.target_id = None
        record.target_link = None
        record.target_state = None
        record.target_lines = None
        if recover:
            record.stage = "pushing"

    def record_failure(self, kantata_id: str, message: str, run_id: str) -> None:
        """Keep any failure in the store, retried later, so no invoice is silently left out
        when the cursor moves on. The stage is kept: recovery resumes where work stopped."""
        record = self.store.get_invoice(kantata_id) or self.store.new_invoice(kantata_id)
        if record.status != "conflict":
            record.status = "failed"
        record.attempts += 1
        record.last_error = message
        record.error_kind = record.error_kind or "transient"
        record.next_attempt_at = self._retry_at(record.attempts)
        self.store.save_invoice(record, run_id=run_id, event="failed", detail=message)

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
            return self._cancel(inv.id, record, run_id, log, dry_run)
        if first.action is Action.SKIP:
            return self._skip(inv.id, record, first.reason, run_id, dry_run, inv.updated_at)
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
        stale = self._state_may_be_stale(inv, record)
        while True:
            decision = decide(
                inv,
                record,
                fingerprint,
                stale=stale,
                reference_in_place=lambda r: self._reference_in_place(inv, r),
                now=self.clock(),
                force=force,
                retry_now=retry_now,
            )
            if decision.action is not Action.RECOVER:
                break
            # Before anything is decided from the record: it may be older than Noko.
            found = self._recover_from_noko(
                inv, doc, fingerprint, record, run_id, log, dry_run, force
            )
            if isinstance(found, tuple):
                return found
            record, stale = found, False
        action = decision.action
        if action is Action.UNCHANGED:
            assert record is not None
            if record.kantata_status != inv.status and not dry_run:
                self._remember_kantata(record, inv)
                self.store.save_invoice(record, durable=False)
            return "unchanged", None
        if action is Action.WRITE_REFERENCE:
            assert record is not None
            if dry_run:
                return "would-update", "reference only"
            self._remember_kantata(record, inv)
            # What the write-back did is the outcome: a refused or failed one is a failure.
            written, why = self._write_success(inv, record, run_id, log)
            return ("repaired", None) if written == "pushed" else (written, why)
        if action is Action.WAIT:
            assert record is not None
            return "waiting", record.last_error or "failed earlier"
        if action is Action.FINISH:
            assert record is not None
            return self._write_success(inv, record, run_id, log)
        if action is Action.UPDATE:
            assert record is not None
            if dry_run:
                return "would-update", _describe(doc)
            return self._update(inv, doc, fingerprint, record, run_id, log, force)
        assert action is Action.PUSH
        if record is not None and decision.forget:
            self._forget_noko(record, recover=decision.forget == "recover")
        if dry_run:
            return "would-push", _describe(doc)
        return self._push(inv, doc, fingerprint, record, run_id, log)

    # ------------------------------------------------------------------ lost or old state

    def _noko_id_in_kantata(self, inv: DecodedInvoice) -> str | None:
        """The Noko invoice id our Kantata reference names, unless it says we deleted it (or
        it names the invoice's natural key: a failure before any push writes that)."""
        if isinstance(inv, UndecodableInvoice):
            return None
        ref = inv.reference_for(self.settings.service_name)
        if ref is None or (ref.external_status or "") == "deleted":
            return None
        if ref.service_model and ref.service_model != SERVICE_MODEL:
            return None
        named = _id(ref.service_model_ref)
        if named in (reference_for(inv, self.profile), reference_for_id(inv.id, self.profile)):
            return None
        return named

    def _stale_signal(self, inv: DecodedInvoice, record: InvoiceRecord | None) -> bool:
        """Kantata carries our reference to a Noko invoice the state file does not have: the
        state file is older than Noko (a restored backup, or a new file)."""
        named = self._noko_id_in_kantata(inv)
        if named is None:
            return False
        if record is None or record.target_id is None:
            return True
        return record.stage == "" and record.target_id != named

    def note_stale_state(
        self, batch: Iterable[DecodedInvoice], records: dict[str, InvoiceRecord]
    ) -> None:
        """Before a page's invoices are handed out: if any of them shows that the state file is
        older than Noko, every create of this cycle looks in Noko first (one bulk listing)."""
        if self._index.wanted:
            return
        for inv in batch:
            if self._stale_signal(inv, records.get(inv.id)):
                self.log.warning(
                    "the state file does not know a Noko invoice that Kantata's reference names "
                    "(a new or restored state file); matching against Noko before creating",
                    kantata_invoice_id=inv.id,
                )
                self._index.wanted = True
                return

    def _state_may_be_stale(self, inv: KantataInvoice, record: InvoiceRecord | None) -> bool:
        """Whether to look in the index before deciding: about to create (no Noko id known,
        not resuming an earlier attempt, which looks by reference itself) in a cycle where the
        state file may not know everything, or the record names another Noko id than Kantata."""
        if record is not None and record.stage in IN_FLIGHT_STAGES:
            return False
        if self._stale_signal(inv, record):
            self._index.wanted = True
            return True
        if not self._index.wanted:
            return False
        return record is None or record.target_id is None or record.target_state == "deleted"

    def _own_in_noko(self, reference: str, kantata_says: str | None) -> list[dict[str, Any]]:
        index = self._index
        with index.lock:
            if not index.loaded:
                prefix = self.profile.noko.reference.split("{", 1)[0]
                count = index.load(self.target.find(prefix), prefix)
                self.log.info(
                    "listed the connector's Noko invoices to match a new or old state file",
                    invoices=count,
                )
        return index.own(reference, kantata_says, self.pusher.owns)

    def _recover_from_noko(
        self,
        inv: KantataInvoice,
        doc: LedgerDocument,
        fingerprint: str,
        record: InvoiceRecord | None,
        run_id: str,
        log: Any,
        dry_run: bool,
        force: bool,
    ) -> InvoiceRecord | tuple[Outcome, str | None] | None:
        """Match an invoice the state file does not know in Noko (or knows under another id)
        against the connector's own Noko invoices before anything is created.

        Returns the record to go on with (now naming the Noko invoice found, if one was), or
        the outcome when it is settled here: already as Kantata asks (synced, whatever a stale
        record said), several of ours (a duplicate conflict), or different from what Kantata
        asks and from what the state file knows (a hand edit: a conflict)."""
        named = self._noko_id_in_kantata(inv)
        own = self._own_in_noko(doc.reference, named)
        if not own:
            return record
        if len(own) > 1:
            duplicate = DuplicateInNokoError(doc.reference, [found.get("id") for found in own])
            if dry_run:
                return "conflict", str(duplicate)
            record = record or self.store.new_invoice(inv.id)
            record.status = "conflict"
            return self._fail(record, "duplicate", str(duplicate), run_id, log, retry=False)
        invoice = own[0]
        noko_id = _id(invoice.get("id"))
        assert noko_id is not None
        if record is not None and record.target_id == noko_id:
            return record
        log = log.bind(noko_invoice_id=noko_id)
        plan = plan_invoice(doc)
        same_totals = not check_totals(plan, invoice)
        if dry_run:
            return "would-update", f"found in Noko as invoice {noko_id}: adopt it"
        record = record or self.store.new_invoice(inv.id)
        known_total = record.total_minor
        record.target_id = noko_id
        record.target_link = self.target.link(invoice)
        record.target_state = str(invoice.get("state") or "") or None
        record.target_lines = None  # the lines as pushed are not known: totals are compared
        record.reference = doc.reference
        record.currency = doc.currency
        record.exponent = doc.exponent
        record.skip_reason = None
        noko_minor = _minor(invoice.get("total_amount"), doc.exponent)
        log.info("found the invoice in Noko; the state file did not know it")
        if same_totals and not header_differs(invoice, plan.fields):
            # Already what Kantata asks for: synced, whatever the state file said.
            record.fingerprint = fingerprint
            record.total_minor = doc.total_minor
            record.balance_in_cents = doc.balance_in_cents
            self._remember_kantata(record, inv)
            record.stage = "pushed"
            if record.status != "conflict":
                record.status = "pending"
            self.store.save_invoice(
                record,
                run_id=run_id,
                event="adopted",
                detail=f"Noko invoice {noko_id} found in Noko, already as Kantata asks "
                "(the state file did not know it)",
            )
            written, why = self._write_success(inv, record, run_id, log)
            return ("repaired", None) if written == "pushed" else (written, why)
        if same_totals or force or (known_total is not None and noko_minor == known_total):
            # Kantata changed since (or only the header differs, or the operator forces the
            # Kantata version): the normal update in place, same Noko id.
            record.total_minor = known_total if known_total is not None else noko_minor
            record.fingerprint = None
            record.stage = ""
            self.store.save_invoice(
                record,
                run_id=run_id,
                event="adopted",
                detail=f"Noko invoice {noko_id} found in Noko (the state file did not know "
                "it); updating it to Kantata's version",
            )
            return record
        record.total_minor = noko_minor
        record.fingerprint = fingerprint
        self._remember_kantata(record, inv)
        return self._conflict(
            record,
            "noko-edited",
            f"Noko invoice {noko_id} ({doc.reference}) was found in Noko, not in the state file, "
            f"and differs from Kantata (Noko {invoice.get('total_amount')}, Kantata "
            f"{format_money(doc.total_minor, doc.exponent, doc.currency)}); it is left as it "
            f"is: run `kantata-sync retry {inv.id} --force` to restore the Kantata version, or "
            f"`kantata-sync resolve {inv.id}` to keep it",
            run_id,
            log,
        )

    @staticmethod
    def _remember_kantata(record: InvoiceRecord, inv: KantataInvoice) -> None:
        record.kantata_status = inv.status
        record.workspace_id = inv.workspaces[0].id if len(inv.workspaces) == 1 else None
        record.kantata_updated_at = inv.updated_at
        record.source_fingerprint = inv.source_fingerprint

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
        if (
            record is not None
            and record.target_state != "deleted"
            and record.status != "skipped"
            and (record.target_id is not None or record.stage)
        ):
            # In Noko, yet a draft (again) or cancelled in Kantata: not for the books.
            log = self.log.bind(run_id=run_id, kantata_invoice_id=kantata_id)
            why = "returned to draft" if reason == "draft" else "cancelled"
            return self._cancel(kantata_id, record, run_id, log, dry_run, why=why)
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
        # Also when it is in Noko already (a later edit made it unmappable): failed, not a
        # conflict, so that fixing the field in Kantata is enough to update it.
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
            record.next_attempt_at = self._retry_at(record.attempts)
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
        self._remember_kantata(record, inv)
        record.skip_reason = None
        self.store.save_invoice(
            record,
            run_id=run_id,
            event="push-started",
            detail=f"{plan.reference}: {len(plan.expenses)} lines, "
            f"{format_money(doc.total_minor, doc.exponent, doc.currency)}"
            + (" (recovering an earlier attempt)" if recovering else "")
            + (f"; time as amounts: {doc.time_note}" if doc.time_note else ""),
        )
        if recovering:
            self._note_in_doubt()  # the earlier attempt's last request may still land
        try:
            named = self._noko_id_in_kantata(inv)
            pushed = self.pusher.push(
                plan,
                recovering=recovering,
                known_ids=() if named is None or not named.isdigit() else (int(named),),
            )
        except TransientApiError as exc:
            if isinstance(exc, WriteInDoubtError):
                self._note_in_doubt()
            return self._fail(record, "transient", str(exc), run_id, log, retry=True)
        except PermanentApiError as exc:
            outcome = self._fail(record, "permanent", str(exc), run_id, log, retry=False)
            self._write_failure(inv.id, record, f"Noko refused the invoice: {exc}", run_id, log)
            return outcome
        except DuplicateInNokoError as exc:
            record.status = "conflict"
            return self._fail(record, "duplicate", str(exc), run_id, log, retry=False)

        noko_invoice = pushed.invoice
        noko_id = _id(noko_invoice.get("id"))
        if noko_id is None:
            return self._fail(
                record, "permanent", "Noko's answer has no invoice id", run_id, log, retry=True
            )
        log = log.bind(noko_invoice_id=noko_id)
        record.target_id = noko_id
        record.target_link = self.target.link(noko_invoice)
        record.target_state = str(noko_invoice.get("state") or "") or None
        # The lines as pushed, for the hand-edit check; unknown for an adopted invoice.
        record.target_lines = (
            None if pushed.adopted else json.dumps(pushed.expense_ids, sort_keys=True)
        )
        mismatch = self._verify(
            plan, noko_invoice, record, "", run_id, log, created=None if pushed.adopted else noko_id
        )
        if mismatch is not None:
            return mismatch
        record.stage = "pushed"
        # Not waited for (nor is `synced` after the write-back): if both are lost in a crash,
        # the intent above is what stays, and recovery finds this Noko invoice by reference.
        self.store.save_invoice(
            record,
            durable=False,
            run_id=run_id,
            event="pushed",
            detail=f"Noko invoice {noko_id}"
            + (" (found from an earlier attempt)" if pushed.adopted else "")
            + (f", {pushed.reused} expenses reused" if pushed.reused else "")
            + (f", {pushed.deleted} orphans removed" if pushed.deleted else ""),
        )
        log.info("pushed to Noko", reference=plan.reference, adopted=pushed.adopted)
        return self._write_success(inv, record, run_id, log)

    def _verify(
        self,
        plan: NokoInvoicePlan,
        noko_invoice: dict[str, Any],
        record: InvoiceRecord,
        when: str,
        run_id: str,
        log: Any,
        *,
        created: str | None = None,
    ) -> tuple[Outcome, str | None] | None:
        """None when Noko's totals are Kantata's to the minor unit; else the recorded failure.
        A mismatch is not retried by itself: it needs a person (or a change in Kantata).
        `created`: the Noko invoice this attempt has just created; with wrong totals it is
        deleted again, with the lines made for it, so that no wrong total stays in the books."""
        problems = check_totals(plan, noko_invoice)
        if problems and created is not None and "total_amount" not in noko_invoice:
            # An answer without the total proves nothing wrong: read the invoice once (only
            # then) before deleting what was just created.
            try:
                fresh = self.target.get(created)
            except ApiError:
                fresh = None
            if fresh is not None:
                problems = check_totals(plan, fresh)
        if not problems:
            return None
        record.stage = ""
        message = f"{when}Noko's totals differ from Kantata's: " + "; ".join(problems)
        if created is not None:
            try:
                removed = self.pusher.discard(plan.reference, int(created))
            except (ApiError, NokoRefusedError) as exc:
                message += (
                    f"; deleting Noko invoice {created} failed ({exc}): delete it in Noko, "
                    "then run retry"
                )
            else:
                self._forget_noko(record, recover=False)
                message += (
                    f"; Noko invoice {created} and the {removed} expenses and time entries "
                    "made for it were deleted again, so no wrong total is left in Noko"
                )
                log.warning("deleted a Noko invoice created with wrong totals", noko_id=created)
        outcome = self._fail(record, "verify", message, run_id, log, retry=False)
        self._write_failure(record.kantata_id, record, message, run_id, log)
        return outcome

    def _conflict(
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
            self._write_failure(record.kantata_id, record, message, run_id, log)
        return "conflict", message

    def _update(
        self,
        inv: KantataInvoice,
        doc: LedgerDocument,
        fingerprint: str,
        record: InvoiceRecord,
        run_id: str,
        log: Any,
        force: bool,
    ) -> tuple[Outcome, str | None]:
        """Bring the Noko invoice up to date in place; the same Noko id throughout."""
        assert record.target_id is not None
        noko_id = record.target_id
        log = log.bind(noko_invoice_id=noko_id)
        plan = plan_invoice(doc)
        previous_total = record.total_minor
        record.stage = "updating"
        record.status = "pending"
        record.reference = plan.reference
        record.fingerprint = fingerprint
        record.currency = doc.currency
        record.exponent = doc.exponent
        record.total_minor = doc.total_minor
        record.balance_in_cents = doc.balance_in_cents
        self._remember_kantata(record, inv)
        self.store.save_invoice(
            record,
            run_id=run_id,
            event="update-started",
            detail=f"Noko invoice {noko_id} to "
            f"{format_money(doc.total_minor, doc.exponent, doc.currency)}"
            + (" (forced)" if force else ""),
        )
        try:
            updated = self.pusher.update(plan, int(noko_id), remove_foreign=force)
        except NokoRefusedError as exc:
            current = exc.invoice
            if (
                current is not None
                and not check_totals(plan, current)
                and not header_differs(current, plan.fields)
            ):
                # Paid or locked, but already what Kantata asks for (the state file was older
                # than Noko): nothing to change, so nothing refused.
                record.target_state = str(current.get("state") or "") or record.target_state
                record.target_lines = None
                record.stage = "pushed"
                self.store.save_invoice(
                    record,
                    run_id=run_id,
                    event="updated",
                    detail=f"Noko invoice {noko_id} is {exc.code} and already as Kantata asks",
                )
                written, error = self._write_success(inv, record, run_id, log)
                return ("repaired", None) if written == "pushed" else (written, error)
            return self._conflict(
                record,
                "refused",
                f"changed in Kantata, but Noko invoice {noko_id} is {exc.code} and cannot be "
                f"changed (Kantata now {format_money(doc.total_minor, doc.exponent, doc.currency)}"
                f", Noko {_fmt_total(previous_total, record)}): correct it in Noko by hand "
                f"(credit note), then run `kantata-sync resolve {inv.id}`",
                run_id,
                log,
            )
        except NokoGoneError:
            if force:
                # The operator asked for the Kantata version: push it again as a new invoice.
                self._forget_noko(record, recover=True)
                return self._push(inv, doc, fingerprint, record, run_id, log)
            return self._conflict(
                record,
                "gone",
                f"Noko invoice {noko_id} was deleted in Noko; run retry --force to push the "
                "Kantata invoice again as a new Noko invoice",
                run_id,
                log,
            )
        except TransientApiError as exc:
            if isinstance(exc, WriteInDoubtError):
                self._note_in_doubt()
            return self._fail(record, "transient", str(exc), run_id, log, retry=True)
        except PermanentApiError as exc:
            outcome = self._fail(record, "permanent", str(exc), run_id, log, retry=False)
            self._write_failure(inv.id, record, f"Noko refused the update: {exc}", run_id, log)
            return outcome
        record.target_state = str(updated.invoice.get("state") or "") or record.target_state
        record.target_link = self.target.link(updated.invoice) or record.target_link
        record.target_lines = json.dumps(updated.line_ids, sort_keys=True)
        mismatch = self._verify(plan, updated.invoice, record, "after the update ", run_id, log)
        if mismatch is not None:
            return mismatch
        record.stage = "pushed"
        self.store.save_invoice(
            record,
            run_id=run_id,
            event="updated",
            detail=f"Noko invoice {noko_id}: {updated.added} lines added, "
            f"{updated.removed} removed"
            + (", taxes changed" if updated.taxes_changed else "")
            + (", details changed" if updated.header_changed else ""),
        )
        log.info("updated in Noko", added=updated.added, removed=updated.removed)
        written, error = self._write_success(inv, record, run_id, log)
        return ("updated", None) if written == "pushed" else (written, error)

    def _cancel(
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
        """Cancelled (or back to draft, or deleted) in Kantata after it was pushed: delete it
        in Noko when Noko allows, so that it is not in the books. `write_back` False: the
        Kantata invoice is gone, so no reference is written to it."""
        if dry_run:
            return (
                "would-cancel",
                f"delete Noko invoice {record.target_id or record.reference}",
            )
        if record.target_id is None:
            # Pushing never finished: nothing may be left in Noko, whatever stage it reached.
            if record.reference:
                found = self.pusher.find_invoice(record.reference)
                if found is not None and _id(found.get("id")) is not None:
                    record.target_id = _id(found.get("id"))
            if record.target_id is None:
                if record.reference:
                    self.pusher.sweep_reference(record.reference)
                record.stage = ""
                reason = {"returned to draft": "draft", "deleted": "deleted in Kantata"}.get(
                    why, "cancelled"
                )
                if not write_back:
                    record.status = "skipped"
                    record.skip_reason = reason
                    record.next_attempt_at = None
                    self.store.save_invoice(
                        record, run_id=run_id, event="skipped", detail=f"{reason}; nothing in Noko"
                    )
                    return "skipped", None
                return self._skip(kantata_id, record, reason, run_id, False, None)
        noko_id = record.target_id
        assert noko_id is not None
        assert record.reference is not None
        log = log.bind(noko_invoice_id=noko_id)
        record.stage = "cancelling"
        self.store.save_invoice(
            record, run_id=run_id, event="cancel-started", detail=f"Noko invoice {noko_id}"
        )
        try:
            self.pusher.cancel(record.reference, int(noko_id))
        except NokoRefusedError as exc:
            return self._conflict(
                record,
                "lifecycle",
                f"{why} in Kantata, but Noko invoice {noko_id} is {exc.code} and was left "
                "untouched: void it in Noko (credit note or refund), then run "
                f"`kantata-sync resolve {kantata_id}`",
                run_id,
                log,
                write_back=write_back,
            )
        except TransientApiError as exc:
            return self._fail(record, "transient", str(exc), run_id, log, retry=True)
        except PermanentApiError as exc:
            return self._fail(record, "permanent", str(exc), run_id, log, retry=False)
        record.stage = ""
        record.status = "skipped"
        record.skip_reason = f"{why} in Kantata; Noko invoice {noko_id} deleted"
        record.target_state = "deleted"
        record.last_error = None
        record.error_kind = None
        record.next_attempt_at = None
        self.store.save_invoice(
            record, run_id=run_id, event="cancelled", detail=f"Noko invoice {noko_id} deleted"
        )
        log.info("cancelled: Noko invoice deleted", why=why)
        if not write_back:
            return "cancelled", None
        reference = ExternalReferenceWrite(
            service_name=self.settings.service_name,
            service_model=SERVICE_MODEL,
            service_model_ref=str(noko_id),
            status="successful",
            external_status="deleted",
            external_message=f"{why.capitalize()} in Kantata; Noko invoice {record.reference} "
            "deleted",
        )
        self._write_reference(kantata_id, record, reference, run_id, log)
        return "cancelled", None

    # ------------------------------------------------------------------ late writes

    def _note_in_doubt(self) -> None:
        self.store.set_cursor(self.clock(), IN_DOUBT_MARK)

    def _sweep_late_writes(self, log: Any) -> None:
        """Delete uninvoiced expenses and entries carrying the marker of an invoice that is done
        (synced, or cancelled and deleted): a create that got no answer can be applied by the
        server after the retry made its own. Runs only for a while after a create was left in
        doubt, so an ordinary cycle sends no extra request."""
        mark = self.store.get_cursor(IN_DOUBT_MARK)
        if mark is None or self.clock() - mark > LATE_WRITE_WINDOW:
            return
        prefix = "[" + self.profile.noko.reference.split("{", 1)[0]
        deleted = 0
        try:
            leftovers = self.pusher.leftovers(prefix)
            records = self.store.by_references([item.reference for item in leftovers])
            for item in leftovers:
                record = records.get(item.reference)
                if record is not None and _done(record):
                    self.pusher.delete_leftover(item)
                    deleted += 1
        except ApiError as exc:
            log.warning(
                "could not look for late writes; the next cycle looks again", error=str(exc)
            )
        if deleted:
            log.info(
                "removed leftovers of creates that landed after their invoice", deleted=deleted
            )

    # ------------------------------------------------------------------ operator decisions

    def accept(self, kantata_id: str, run_id: str) -> str:
        """Resolve a conflict by keeping the Noko invoice as it is and taking the current
        Kantata invoice as in step with it. Returns what was decided, for the operator."""
        record = self.store.get_invoice(kantata_id)
        if record is None:
            raise ConnectorError(f"invoice {kantata_id} is not in the state database")
        if record.status != "conflict":
            return f"invoice {kantata_id} is {record.status}, not a conflict: nothing to resolve"
        decoded = decode_invoices(self.kantata.get_invoices([kantata_id]))
        found = next((d for d in decoded if d.id == kantata_id), None)
        if found is None and record.target_id is not None:
            # Deleted in Kantata, its Noko invoice paid: kept in Noko as the operator decides.
            record.status = "skipped"
            record.skip_reason = (
                f"deleted in Kantata; Noko invoice {record.target_id} kept by an "
                "operator's decision"
            )
            decided = f"resolved by an operator: {record.last_error}"
            record.stage = ""
            record.attempts = 0
            record.last_error = None
            record.error_kind = None
            record.next_attempt_at = None
            self.store.save_invoice(record, run_id=run_id, event="resolved", detail=decided)
            return f"invoice {kantata_id}: skipped (deleted in Kantata), Noko invoice kept as it is"
        if found is None:
            raise ConnectorError(f"Kantata has no invoice {kantata_id}")
        if isinstance(found, UndecodableInvoice):
            raise ConnectorError(f"cannot resolve: {found.error}")
        noko = self.target.get(record.target_id) if record.target_id is not None else None
        if found.draft or found.is_cancelled:
            record.status = "skipped"
            record.skip_reason = (
                f"{'draft' if found.draft else 'cancelled'} in Kantata; Noko invoice "
                f"{record.target_id} kept by an operator's decision"
            )
        else:
            try:
                doc = to_ledger(found, self.profile)
            except MappingError as exc:
                raise ConnectorError(f"cannot resolve: {exc}") from None
            record.status = "synced"
            record.fingerprint = doc.fingerprint()
        if noko is not None and record.exponent is not None:
            try:
                record.total_minor = to_minor(str(noko.get("total_amount")), record.exponent)
            except ValueError:
                record.total_minor = None
            record.target_state = str(noko.get("state") or "") or record.target_state
        record.target_lines = None  # Noko's lines as they are now are the accepted ones
        self._remember_kantata(record, found)
        record.stage = ""
        record.attempts = 0
        decided = f"resolved by an operator: {record.last_error}"
        record.last_error = None
        record.error_kind = None
        record.next_attempt_at = None
        self.store.save_invoice(record, run_id=run_id, event="resolved", detail=decided)
        log = self.log.bind(run_id=run_id, kantata_invoice_id=kantata_id)
        if record.target_id is not None:
            reference = self._success_reference(record)
            reference = dataclasses.replace(
                reference, external_message="Resolved by an operator; Noko invoice kept as it is"
            )
            self._write_reference(kantata_id, record, reference, run_id, log)
        return f"invoice {kantata_id}: {record.status}, Noko invoice kept as it is"
