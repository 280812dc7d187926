"""The worker pool of one cycle: the scan hands invoices out (`Runner.submit_all`), at most a
bounded number in flight (`Slots`), each worked on by `SyncEngine.handle` in a worker thread."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import structlog
from sqlalchemy.exc import SQLAlchemyError

from connector.state.store import InvoiceRecord
from connector.sync.cursor import Scan
from connector.sync.outcome import CycleResult
from mappings.kantata import DecodedInvoice

if TYPE_CHECKING:
    from connector.sync.engine import SyncEngine

PREFETCH = 200  # records read from the store in one query, a page's worth


class InvoiceLocks:
    """One invoice is worked on by one thread at a time: a lock per invoice id, kept only
    while some thread holds or waits for it. Two different invoices never wait for each other
    (a worker waiting in a batch of writes holds its invoice's lock; a shared lock would keep
    another invoice's worker from ever joining that batch)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, kantata_id: str) -> Iterator[None]:
        with self._mutex:
            lock, users = self._held.get(kantata_id, (None, 0))
            lock = lock or threading.Lock()
            self._held[kantata_id] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._mutex:
                users = self._held[kantata_id][1] - 1
                if users:
                    self._held[kantata_id] = (lock, users)
                else:
                    del self._held[kantata_id]

    def __len__(self) -> int:
        with self._mutex:
            return len(self._held)


class Runner:
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
        self.retry_now = False
        self.log = log
        self.slots = Slots(engine.settings.workers * 4)
        self.lock = threading.Lock()

    def submit_all(
        self, invoices: Iterable[DecodedInvoice], scan: Scan, *, until: datetime | None
    ) -> None:
        for batch in _chunks(invoices, PREFETCH):
            # The stored records of the batch in one query. Only for invoices not yet handed
            # out in this cycle: for those, nothing else writes the record until their turn
            # (a second version of one already in flight reads its record under its lock).
            fresh = Counter(inv.id for inv in batch if inv.id not in scan.seen)
            records = self.engine.store.get_invoices(list(fresh))
            self.engine.note_stale_state(batch, records)
            for inv in batch:
                if self.engine.halting():
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
                known: InvoiceRecord | Literal[False] | None = (
                    records.get(inv.id) if previous is None and fresh[inv.id] == 1 else False
                )
                self.slots.acquire()
                # Queued: the writes' batcher counts it as one that may yet come to write.
                self.engine.writes.enter()
                # Not kept: `_work` records every outcome itself, and `drain` waits on the slots.
                self.pool.submit(self._work, inv, known)

    def _work(self, inv: DecodedInvoice, record: InvoiceRecord | Literal[False] | None) -> None:
        try:
            if self.engine.halting():
                # Stopping: invoices not yet started are left for the next run, untouched.
                with self.lock:
                    self.result.counts["stopped"] += 1
                return
            try:
                with structlog.contextvars.bound_contextvars(
                    run_id=self.run_id, kantata_invoice_id=inv.id
                ):
                    outcome, error = self.engine.handle(
                        inv,
                        self.run_id,
                        dry_run=self.dry_run,
                        force=self.force,
                        retry_now=self.retry_now,
                        record=record,
                    )
            except (SQLAlchemyError, sqlite3.Error) as exc:
                # The state file, not the invoice: stop taking new ones (what this one did
                # in the target is found again from its intent on disk).
                self.engine._store_failed(exc)
                outcome, error = "stopped", None
            except Exception as exc:  # one invoice must never stop the others
                self.log.exception("unexpected error on one invoice", kantata_invoice_id=inv.id)
                outcome, error = "failed", f"unexpected error: {type(exc).__name__}: {exc}"
                if not self.dry_run:
                    try:
                        self.engine.record_failure(inv.id, error, self.run_id)
                    except Exception:  # the store itself is failing: the run reports it
                        self.log.exception("could not record the failure")
            with self.lock:
                self.result.counts[outcome] += 1
                if outcome in ("failed", "waiting", "conflict"):
                    self.result.failed[inv.id] = error or outcome
                else:
                    self.result.failed.pop(inv.id, None)
                if outcome.startswith("would-"):
                    self.result.planned[inv.id] = (outcome, error or "")
                progress = self.engine.on_progress
                if progress is not None:
                    progress(self.result.counts)
                on_invoice = self.engine.on_invoice
                if on_invoice is not None:
                    on_invoice(inv.id, outcome, error, inv)
        finally:
            self.engine.writes.leave()
            self.slots.release()

    def drain(self) -> None:
        """Wait until every invoice handed out has been worked on."""
        self.slots.drain()


class Slots:
    """At most `capacity` invoices in flight between the scan and the workers.

    A full feeder waits until half of them are done, then hands out the next half: it is
    woken once per half-capacity invoices, not once per invoice (each wake-up is a thread
    switch and a hand-over of the GIL)."""

    __slots__ = ("_changed", "_in_flight", "capacity", "low")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.low = capacity // 2
        self._in_flight = 0
        self._changed = threading.Condition(threading.Lock())

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def acquire(self) -> None:
        with self._changed:
            if self._in_flight >= self.capacity:
                self._changed.wait_for(lambda: self._in_flight <= self.low)
            self._in_flight += 1

    def release(self) -> None:
        with self._changed:
            if self._in_flight <= 0:
                raise ValueError("released more slots than were acquired")
            self._in_flight -= 1
            if self._in_flight <= self.low:
                self._changed.notify_all()

    def drain(self) -> None:
        """Wait until every slot handed out is back."""
        with self._changed:
            self._changed.wait_for(lambda: self._in_flight == 0)


def _chunks(items: Iterable[DecodedInvoice], size: int) -> Iterator[list[DecodedInvoice]]:
    batch: list[DecodedInvoice] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
