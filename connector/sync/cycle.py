"""One sync cycle: read Kantata, hand each invoice to the workers, follow the target's
changes, move the cursors.

Reading: Kantata invoices updated after `cursor - lookback`, in `id:asc` order over that fixed
lower bound. In that order an invoice updated during the scan keeps its place and new invoices
come at the end, so page numbers never skip a row; a row that disappears mid-scan (a deleted
draft) is detected by the shrinking `count` and the scan is read again. After a complete scan
the cursor moves to Kantata's clock at the first page (its `Date` header) minus a clock-skew
margin, and never past this machine's clock at the start minus the same margin; without a
`Date`, to the newest `updated_at` handled. The page's stored records are read in one query.

A refused token (`AuthError`), a spent request budget (`LimitReachedError`) or a failing state
file ends the cycle: no new invoice is started, none is failed for it, the cursor stays.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import structlog

from connector.errors import ApiError, AuthError, LimitReachedError, StateFileError
from connector.state.store import state_file_problem
from connector.sync.apply import Apply
from connector.sync.changes import TARGET_CURSOR
from connector.sync.cursor import Scan
from connector.sync.outcome import CycleResult, Outcome
from connector.sync.pool import Runner
from mappings.kantata import DecodedInvoice, decode_invoices

if TYPE_CHECKING:
    from connector.sync.engine import SyncEngine

MAX_SCAN_PASSES = 3


class Cycle:
    """Runs the engine's cycles: the scan, the retries, the target's changes, the cursors."""

    def __init__(self, engine: SyncEngine, apply: Apply) -> None:
        self.engine = engine
        self.apply = apply
        self.store = engine.store
        self.settings = engine.settings
        self.log = engine.log

    def run(
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
        engine = self.engine
        run_id = uuid.uuid4().hex[:12]
        log = self.log.bind(run_id=run_id, kind=kind)
        started = time.monotonic()
        cursor = self.store.get_cursor()
        result = CycleResult(run_id, kind, cursor_before=cursor, cursor_after=cursor)
        run = None if dry_run else self.store.start_run(run_id, kind, cursor)
        scan_start = engine.clock()
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
        # A new state file knows nothing of what the target holds: look before creating.
        engine.recover.new_cycle(
            wanted=cursor is None and self.store.get_cursor(TARGET_CURSOR) is None
        )
        engine.halt.clear()
        try:
            with (
                structlog.contextvars.bound_contextvars(run_id=run_id),
                ThreadPoolExecutor(
                    max_workers=self.settings.workers, thread_name_prefix="sync"
                ) as pool,
            ):
                runner = Runner(engine, pool, run_id, result, dry_run, force, log)
                try:
                    self._hand_out(runner, scan, lower, until, only_ids, result, log)
                    runner.drain()
                finally:
                    engine.writes.close()  # nothing waits for a batch once the cycle ends
            if not dry_run and only_ids is None and not engine.halting():
                try:
                    engine.changes.poll(run_id, log, result)
                    engine.late.sweep(log)
                except (AuthError, LimitReachedError) as exc:
                    engine.halt.api_stopped(exc)
                except ApiError as exc:
                    # Pushes are done and recorded; payment states wait for the next cycle.
                    name = engine.target.name
                    result.outcome = "degraded"
                    result.error = f"reading {name}'s changes failed: {exc}"
                    log.error(f"reading {name}'s changes failed", error=str(exc))
        except (AuthError, LimitReachedError) as exc:
            engine.halt.api_stopped(exc)
        except ApiError as exc:
            result.outcome = "aborted"
            result.error = f"reading Kantata failed: {exc}"
            log.error("cycle aborted", error=str(exc))
        halt = engine.halt
        if halt.store_error is not None:
            # Nothing more can be recorded: what was committed stays, the cursor does not move,
            # and the next run continues from the intents on disk.
            raise StateFileError(state_file_problem(halt.store_error, self.store.path))
        if halt.auth_error is not None:
            # Exit 1 with one line naming the API and the fix; the cursor stays.
            result.auth_error = halt.auth_error
            result.outcome = "aborted"
            result.error = (
                f"{halt.auth_error.summary()}; the invoices not done are left as they were "
                "and the next sync continues"
            )
        elif halt.limit is not None:
            # Not an error: the cycle ends cleanly, exit 0; the next cycle tries again.
            result.limit_reached = halt.limit
            result.error = halt.limit_message()
        if engine.stop.is_set() and result.outcome == "ok" and halt.limit is None:
            result.outcome = "interrupted"
            result.error = "stopped by a signal; the next start continues where this one stopped"

        if (
            result.outcome == "ok"
            and halt.limit is None
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

    def _hand_out(
        self,
        runner: Runner,
        scan: Scan,
        lower: datetime | None,
        until: datetime | None,
        only_ids: Iterable[str] | None,
        result: CycleResult,
        log: Any,
    ) -> None:
        # Invoices named by the operator are tried now, whatever their retry time.
        runner.retry_now = only_ids is not None
        if only_ids is not None:
            runner.submit_all(self.fetch_by_id(list(only_ids), result), scan, until=None)
            return
        self._scan(runner, scan, lower, until, log)
        if self.engine.halting():
            return
        retry = [
            r.kantata_id
            for r in self.store.retry_candidates(self.engine.clock())
            if r.kantata_id not in scan.seen
        ]
        if retry:
            log.info("retrying earlier failures", invoices=len(retry))
            runner.submit_all(self.fetch_by_id(retry, result), scan, until=None)

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
        engine = self.engine
        for attempt in range(1, MAX_SCAN_PASSES + 1):
            scan.shrank = False
            previous_count: int | None = None
            unseen = 0
            noted = 0
            for page in engine.kantata.iter_invoice_pages(
                updated_after=lower, per_page=self.settings.per_page
            ):
                runner.result.pages += 1
                if scan.server_time is None:
                    scan.server_time = page.server_time
                if engine.on_page is not None:
                    engine.on_page(page.page, page.count)
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
                if engine.halting():
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

    def fetch_by_id(
        self, ids: list[str], result: CycleResult | None = None
    ) -> Iterator[DecodedInvoice]:
        kantata = self.engine.kantata
        for start in range(0, len(ids), 200):
            chunk = ids[start : start + 200]
            body = kantata.get_invoices(chunk)
            decoded = decode_invoices(body)
            found = {inv.id for inv in decoded}
            yield from decoded
            missing = [kid for kid in chunk if kid not in found]
            if missing and self._vanish_needs_proof(missing):
                # Asked again before anything in the target is deleted for it: one answer that
                # leaves an invoice out is not proof that it is gone.
                again = {inv.id for inv in decode_invoices(kantata.get_invoices(missing))}
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
        is simply skipped; after it, its target invoice goes as for a cancellation: deleted
        when the target allows, a conflict when it is paid or locked."""
        with self.engine.lock_for(kantata_id):
            record = self.store.get_invoice(kantata_id)
            if record is None or record.status == "skipped":
                return None
            log = self.log.bind(run_id=run_id, kantata_invoice_id=kantata_id)
            in_target = (
                record.target_id is not None and record.target_state != "deleted"
            ) or record.stage in ("pushing", "pushed", "updating", "cancelling")
            if in_target:
                if record.status == "conflict" and record.error_kind == "lifecycle":
                    return "conflict", record.last_error
                log.info("deleted in Kantata after its push; removing its target invoice")
                return self.apply.cancel(
                    kantata_id, record, run_id, log, False, why="deleted", write_back=False
                )
            if record.status == "synced":
                return None
            record.status = "skipped"
            record.skip_reason = "deleted in Kantata"
            record.next_attempt_at = None
            self.store.save_invoice(record, event="vanished", detail="no longer in Kantata")
            return "skipped", None
