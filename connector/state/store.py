"""The state store: one SQLite file (WAL) holding invoices, their history, cursors and runs.

A write that protects a remote call is committed (fsync'd) before the call is made (the intent
log), so a killed process leaves a record of what it may have created; writes made at the same
moment by several workers share one commit. Writes a crash may lose without harm (an invoice
synced or skipped: the cycle that made them is repeated, the cursor moving only after them) are
not waited for: they join the next commit. Every open reads the schema revision, and a file
behind this version's is migrated with Alembic; the file is created readable by its owner only.
"""

from __future__ import annotations

import contextlib
import operator
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, create_engine

from connector import __version__
from connector.errors import StateFileError
from connector.http.text import clean
from connector.state import schema
from connector.state.activity import daily_activity
from connector.state.files import WriterLock, prepare_file, sqlite_path, state_file_problem
from connector.state.lookups import InvoiceLookups
from connector.state.models import (
    CursorRecord,
    InvoiceEvent,
    InvoiceRecord,
    InvoiceRow,
    MetaRow,
    RunRecord,
)
from connector.state.runs import RunLog

__all__ = [
    "CursorRecord",
    "InvoiceEvent",
    "InvoiceRecord",
    "RunRecord",
    "Store",
    "sqlite_path",
    "state_file_problem",
]

MAIN_CURSOR = "invoices"
LAZY_BATCH = 256
LAZY_SECONDS = 1.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class Store:
    """Typed access to the state database; safe to share between worker threads.

    With `create=False` (the commands that only read), a state file that does not exist is
    an error (`StateFileError`), never created empty."""

    def __init__(self, database_url: str, *, create: bool = True) -> None:
        self.database_url = database_url
        self.path = sqlite_path(database_url)
        if self.path is not None and not create and not self.path.exists():
            raise StateFileError(
                f"no state file at {self.path} (KANTATA_SYNC_DATABASE_URL={database_url}): "
                "point KANTATA_SYNC_DATABASE_URL at the state file, or run `kantata-sync "
                "sync` to create it"
            )
        self._write_lock = threading.RLock()
        # Writes queued for the next commit, numbered in order; `_committed` is the number of
        # the last one on disk.
        self._pending_lock = threading.Lock()
        self._pending: list[tuple[dict[str, Any], tuple[Any, ...] | None]] = []
        self._pending_since = 0.0
        self._queued = 0
        self._committed = 0
        self._lock = WriterLock(self.path)
        self._runs = RunLog(self)
        self._lookups = InvoiceLookups(self)
        # The connection the batched commits write on, checked out once and kept (under
        # `_write_lock`): a commit is then the driver's statements and its commit, without a
        # pool checkout, a transaction object and a reset on return each time.
        self._writer: Any = None
        if self.path is not None:
            prepare_file(self.path)
            self.engine: Engine = create_engine(
                database_url, connect_args={"check_same_thread": False, "timeout": 30}
            )
        else:
            self.engine = create_engine(
                "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
            )
        event.listen(self.engine, "connect", schema.configure_connection)
        try:
            schema.migrate_when_free(self.engine, self._write_lock)
        except (SQLAlchemyError, OSError) as exc:
            self.engine.dispose()
            raise StateFileError(state_file_problem(exc, self.path)) from None
        except schema.UnknownSchemaError as exc:  # a schema revision this version does not know
            self.engine.dispose()
            raise StateFileError(
                f"state file {self.path or 'in memory'} has a schema this version of "
                f"kantata-sync ({__version__}) does not know ({exc}): use the version that "
                "wrote it, or a newer one"
            ) from None
        # Each column's conversion to what the driver stores (aware datetimes to SQLite's
        # text form, as SQLAlchemy would write them), worked out once for the upsert.
        dialect = self.engine.dialect
        self._at = _EVENTS.c.at.type.bind_processor(dialect) or (lambda value: value)
        # The record's values in column order in one call (C), then only the columns that
        # need converting (the datetimes) converted.
        self._column_names = tuple(column.name for column in _INVOICES.columns)
        self._read_columns = operator.attrgetter(*self._column_names)
        self._converted = tuple(
            (column.name, convert)
            for column in _INVOICES.columns
            if (convert := column.type.bind_processor(dialect)) is not None
        )

    # ------------------------------------------------------------------ setup

    def schema_revision(self) -> str | None:
        with self.engine.connect() as connection:
            return schema.revision(connection)

    def written_by(self) -> str | None:
        """The version of kantata-sync that last opened the state file to write."""
        with self._session() as session:
            row = session.get(MetaRow, "written_by")
            return row.value if row else None

    def describe(self) -> dict[str, str | None]:
        """Which database this is, for every report: its path, the version that last wrote
        it and its schema revision."""
        return {
            "path": str(self.path) if self.path is not None else ":memory:",
            "written_by": self.written_by(),
            "schema": self.schema_revision(),
        }

    def close(self) -> None:
        """Commit what is pending and let go of the file (its lock, its connections), even
        when that last commit fails; the failure is then a `StateFileError` naming it."""
        try:
            self.flush()
        except (SQLAlchemyError, sqlite3.Error) as exc:
            raise StateFileError(state_file_problem(exc, self.path)) from None
        finally:
            self.release_writer_lock()
            with self._write_lock:
                self._drop_writer()
            self.engine.dispose()

    def _writer_connection(self) -> Any:
        """The driver connection of the batched commits (call with `_write_lock` held)."""
        if self._writer is None:
            self._writer = self.engine.raw_connection()
        return self._writer.driver_connection

    def _drop_writer(self) -> None:
        """Give the writer connection back (after a failure: a new one is opened next time)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()

    # ------------------------------------------------------------------ one writer

    @property
    def lock_path(self) -> Path | None:
        return self._lock.path

    def acquire_writer_lock(self, wait: float = 0.0) -> None:
        """Take the database's writer lock (`LockHeldError` when another process holds it)."""
        if self._lock.acquire(wait):
            with self._write_lock, self.engine.begin() as connection:
                schema.write_meta(connection, "written_by", __version__)

    def release_writer_lock(self) -> None:
        self._lock.release()

    @contextlib.contextmanager
    def writer(self, wait: float = 0.0) -> Iterator[None]:
        self.acquire_writer_lock(wait)
        try:
            yield
        finally:
            self.release_writer_lock()

    # ------------------------------------------------------------------ sessions

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        self._settle()
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._write_lock, self._session() as session:
            yield session
            session.commit()

    # ------------------------------------------------------------------ cursor

    def get_cursor(self, name: str = MAIN_CURSOR) -> datetime | None:
        with self._session() as session:
            row = session.get(CursorRecord, name)
            return row.value if row else None

    def set_cursor(self, value: datetime | None, name: str = MAIN_CURSOR) -> None:
        with self._tx() as session:
            row = session.get(CursorRecord, name)
            if row is None:
                row = CursorRecord(name=name, value=value, updated_at=utcnow())
            else:
                row.value = value
                row.updated_at = utcnow()
            session.add(row)

    # ------------------------------------------------------------------ invoices
    # The reads are `InvoiceLookups`'s (`lookups.py`); the writes queue here and are
    # committed together (`save_invoice`, `flush`).

    def get_invoice(self, kantata_id: str) -> InvoiceRecord | None:
        return self._lookups.get_invoice(kantata_id)

    def get_invoices(self, kantata_ids: Sequence[str]) -> dict[str, InvoiceRecord]:
        return self._lookups.get_invoices(kantata_ids)

    def save_invoice(
        self,
        record: InvoiceRecord,
        *,
        run_id: str = "",
        event: str = "",
        detail: str = "",
        durable: bool = True,
    ) -> InvoiceRecord:
        """Insert or replace the record (and log an event).

        With `durable` (the default) the call returns once the write is committed to disk:
        what protects a remote call is recorded before it. Without it, the write joins the
        next commit (any durable write, any read, at most `LAZY_BATCH` writes or
        `LAZY_SECONDS` later, `flush`, `close`): for writes a crash may lose because the work
        they record is found again (the cursor only moves after them). Concurrent durable
        writes share one commit (group commit). The record object stays the caller's."""
        now = utcnow()
        record.updated_at = now
        values = dict(zip(self._column_names, self._read_columns(record), strict=True))
        for name, convert in self._converted:
            values[name] = convert(values[name])
        if values["last_error"]:
            # Text from outside (an API's error): no secret, no control character on disk.
            values["last_error"] = clean(values["last_error"], 2000)
        row = (
            values,
            (record.kantata_id, run_id, self._at(now), event, clean(detail, 2000))
            if event
            else None,
        )
        with self._pending_lock:
            self._pending.append(row)
            self._queued += 1
            ticket = self._queued
            if len(self._pending) == 1:
                self._pending_since = time.monotonic()
            lazy_ok = (
                len(self._pending) < LAZY_BATCH
                and time.monotonic() - self._pending_since < LAZY_SECONDS
            )
        if durable or not lazy_ok:
            self._commit_until(ticket)
        return record

    def _settle(self) -> None:
        """Reads see every write made before them: queued ones, and ones another thread has
        taken from the queue but not committed yet (its commit is waited for)."""
        if self._committed < self._queued:
            self.flush()

    def flush(self) -> None:
        """Commit every write made so far."""
        with self._pending_lock:
            ticket = self._queued
        self._commit_until(ticket)

    def _commit_until(self, ticket: int) -> None:
        """Commit pending writes up to `ticket` (and any queued since, in one transaction)."""
        if self._committed >= ticket:
            return
        with self._write_lock:
            if self._committed >= ticket:
                return  # another thread's commit took ours along
            with self._pending_lock:
                batch, self._pending = self._pending, []
                upto = self._queued
            if not batch:
                return
            try:
                raw = self._writer_connection()
                try:
                    # One invoice saved several times in the batch (pushed, then synced) is
                    # written once, where it first appears, as it was saved last: one
                    # transaction, so the same rows on disk, for fewer statements.
                    last = {values["kantata_id"]: values for values, _ in batch}
                    for values, event_row in batch:
                        newest = last.pop(values["kantata_id"], None)
                        if newest is not None:
                            raw.execute(_UPSERT_SQL, newest)
                        if event_row is not None:
                            raw.execute(_EVENT_SQL, event_row)
                    raw.commit()
                except BaseException:
                    with contextlib.suppress(Exception):
                        raw.rollback()
                    self._drop_writer()
                    raise
            except BaseException:
                with self._pending_lock:  # not written: kept for the next commit, in order
                    self._pending[:0] = batch
                raise
            self._committed = upto

    def new_invoice(self, kantata_id: str, status: str = "pending") -> InvoiceRecord:
        now = utcnow()
        return InvoiceRecord(
            kantata_id=kantata_id, status=status, first_seen_at=now, updated_at=now
        )

    def retry_candidates(self, now: datetime) -> list[InvoiceRecord]:
        return self._lookups.retry_candidates(now)

    def by_references(self, references: Sequence[str]) -> dict[str, InvoiceRecord]:
        return self._lookups.by_references(references)

    def by_target_ids(self, target_ids: Sequence[str]) -> dict[str, InvoiceRecord]:
        return self._lookups.by_target_ids(target_ids)

    def payments_due(self) -> list[InvoiceRecord]:
        return self._lookups.payments_due()

    def failed_ids(self) -> list[str]:
        return self._lookups.failed_ids()

    def counts(self) -> dict[str, int]:
        return self._lookups.counts()

    def has_credits(self) -> bool:
        return self._lookups.has_credits()

    def invoices_with_status(self, *statuses: str, limit: int = 500) -> list[InvoiceRecord]:
        return self._lookups.invoices_with_status(*statuses, limit=limit)

    def balance_warnings(self, limit: int = 200) -> list[InvoiceRecord]:
        return self._lookups.balance_warnings(limit)

    def events(self, kantata_id: str, limit: int = 200) -> list[InvoiceEvent]:
        return self._lookups.events(kantata_id, limit)

    def all_invoices(self) -> Iterator[InvoiceRecord]:
        yield from self._lookups.all_invoices()

    # ------------------------------------------------------------------ runs, notifications

    def start_run(self, run_id: str, kind: str, cursor: datetime | None) -> RunRecord:
        return self._runs.start_run(run_id, kind, cursor)

    def finish_run(self, run: RunRecord) -> None:
        self._runs.finish_run(run)

    def runs(self, limit: int = 20) -> list[RunRecord]:
        return self._runs.runs(limit)

    def last_run_with_outcome(self, *outcomes: str) -> RunRecord | None:
        """The most recent finished run whose outcome is one of `outcomes`."""
        return self._runs.last_run_with_outcome(*outcomes)

    def close_stale_runs(self) -> None:
        """Runs still marked running belong to a process that died: mark them interrupted."""
        self._runs.close_stale_runs()

    def notified(self) -> dict[str, str]:
        """Kantata id -> the status (failed | conflict) the webhook was last told about."""
        return self._runs.notified()

    def set_notified(self, told: dict[str, str], cleared: Sequence[str]) -> None:
        self._runs.set_notified(told, cleared)

    def daily_activity(self, since: datetime) -> list[tuple[str, int, int, int]]:
        """Per UTC day from `since` on: synced, failed, and open at the day's end (see
        `connector.state.activity`)."""
        with self._session() as session:
            return daily_activity(session.connection(), since)


_INVOICES = InvoiceRow.__table__  # type: ignore[attr-defined]
_EVENTS = InvoiceEvent.__table__  # type: ignore[attr-defined]
# Built from the table's own column names, nothing from outside.
_COLUMNS = ", ".join(c.name for c in _INVOICES.columns)
_VALUES = ", ".join(f":{c.name}" for c in _INVOICES.columns)
_UPDATES = ", ".join(
    f"{c.name} = excluded.{c.name}" for c in _INVOICES.columns if not c.primary_key
)
_UPSERT_SQL = f"INSERT INTO invoices ({_COLUMNS}) VALUES ({_VALUES}) ON CONFLICT (kantata_id) DO UPDATE SET {_UPDATES}"  # noqa: E501, S608
_EVENT_SQL = (
    "INSERT INTO invoice_events (kantata_id, run_id, at, event, detail) VALUES (?, ?, ?, ?, ?)"
)
