"""Tables of the state database. Changing one means adding a migration in `migrations/versions`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; stored as naive UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the state store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


def _when(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


class InvoiceRow(SQLModel, table=True):
    """What the connector knows about one Kantata invoice: the table. Code works on
    `InvoiceRecord`, the same fields as a plain object."""

    __tablename__ = "invoices"

    kantata_id: str = Field(primary_key=True)
    status: str = Field(index=True)
    """pending | synced | failed | skipped | conflict"""
    stage: str = ""
    """'' (at rest) | 'pushing' (intent recorded, the target's objects may exist) |
    'pushed' (the target's invoice exists, Kantata write-back outstanding)"""
    reference: str | None = None
    fingerprint: str | None = None
    """Ledger fingerprint of the document in the target (or being pushed)."""
    source_fingerprint: str | None = None
    """Fingerprint of the Kantata invoice as last seen (also for unmappable ones)."""
    target_id: str | None = Field(default=None, index=True)
    """The accounting system's id of the invoice pushed for it (text: Noko's "123", Xero's
    UUID)."""
    target_link: str | None = None
    """The page a person opens to see that invoice."""
    target_state: str | None = None
    """The accounting system's state of that invoice as last seen ('unpaid', 'paid', ...)."""
    target_lines: str | None = None
    """JSON: the keys of the lines of the pushed document (a list; files written before
    target ids became text hold an object, line key -> the line's id in the accounting
    system). Read for its keys only: the hand-edit check compares line counts."""
    currency: str | None = None
    exponent: int | None = None
    total_minor: int | None = None
    balance_in_cents: int | None = None
    kantata_updated_at: datetime | None = _when(default=None)
    attempts: int = 0
    last_error: str | None = None
    error_kind: str | None = None
    """mapping | permanent | transient | verify | writeback"""
    next_attempt_at: datetime | None = _when(default=None)
    skip_reason: str | None = None
    writeback_hash: str | None = None
    """Hash of the external reference last written to Kantata (to write only on change)."""
    kantata_status: str | None = None
    """Kantata's own status of the invoice when last seen ('new', 'accepted payment', ...)."""
    workspace_id: str | None = None
    """The invoice's project when it has exactly one (external payments need one)."""
    payment_recorded_at: datetime | None = _when(default=None)
    """When the connector recorded Noko's payment as an external payment in Kantata."""
    first_seen_at: datetime = _when()
    updated_at: datetime = _when()
    synced_at: datetime | None = _when(default=None)


@dataclass(slots=True, kw_only=True)
class InvoiceRecord:
    """What the connector knows about one Kantata invoice, as the engine works on it: one row
    of `InvoiceRow`, field for field (a test holds the two together). A plain object, so that
    making and changing one costs no ORM bookkeeping; the store reads and writes it with
    Core statements."""

    kantata_id: str
    status: str
    stage: str = ""
    reference: str | None = None
    fingerprint: str | None = None
    source_fingerprint: str | None = None
    target_id: str | None = None
    target_link: str | None = None
    target_state: str | None = None
    target_lines: str | None = None
    currency: str | None = None
    exponent: int | None = None
    total_minor: int | None = None
    balance_in_cents: int | None = None
    kantata_updated_at: datetime | None = None
    attempts: int = 0
    last_error: str | None = None
    error_kind: str | None = None
    next_attempt_at: datetime | None = None
    skip_reason: str | None = None
    writeback_hash: str | None = None
    kantata_status: str | None = None
    workspace_id: str | None = None
    payment_recorded_at: datetime | None = None
    first_seen_at: datetime
    updated_at: datetime
    synced_at: datetime | None = None


class InvoiceEvent(SQLModel, table=True):
    """History of one invoice: every push, failure, skip and write-back."""

    __tablename__ = "invoice_events"

    id: int | None = Field(default=None, primary_key=True)
    kantata_id: str = Field(index=True)
    run_id: str
    at: datetime = _when()
    event: str
    detail: str = ""


class CursorRecord(SQLModel, table=True):
    __tablename__ = "cursors"

    name: str = Field(primary_key=True)
    value: datetime | None = _when(default=None)
    updated_at: datetime = _when()


class RunRecord(SQLModel, table=True):
    """One cycle of `sync`, `backfill` or `run`."""

    __tablename__ = "runs"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True, unique=True)
    kind: str
    started_at: datetime = _when()
    finished_at: datetime | None = _when(default=None)
    outcome: str = "running"
    """running, or one of `connector.sync.engine.CYCLE_OUTCOMES`"""
    seen: int = 0
    pushed: int = 0
    updated: int = 0
    conflicts: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    pages: int = 0
    cursor_before: datetime | None = _when(default=None)
    cursor_after: datetime | None = _when(default=None)
    error: str | None = None


class NotificationRecord(SQLModel, table=True):
    """Invoices the webhook has been told about as failed or in conflict: one row while the
    problem lasts, so that a retry or a restart does not tell it again."""

    __tablename__ = "notifications"

    kantata_id: str = Field(primary_key=True)
    status: str
    """failed | conflict, as notified"""
    notified_at: datetime = _when()


class MetaRow(SQLModel, table=True):
    """Facts about the state file: `written_by` is the version of kantata-sync that last
    opened it to write."""

    __tablename__ = "meta"

    key: str = Field(primary_key=True)
    value: str
