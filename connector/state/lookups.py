"""The store's reads of invoices: one or many by Kantata id, by reference or by target id,
those a cycle must look at again, payments due, and the counts and lists of the reports."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func
from sqlmodel import col, select

from connector.state.models import InvoiceEvent, InvoiceRecord, InvoiceRow

if TYPE_CHECKING:
    from connector.state.store import Store

_INVOICES = InvoiceRow.__table__  # type: ignore[attr-defined]


class InvoiceLookups:
    """Invoice reads, through the store's connections; each sees every write made before it."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get_invoice(self, kantata_id: str) -> InvoiceRecord | None:
        rows = self._records(select(_INVOICES).where(_INVOICES.c.kantata_id == kantata_id))
        return rows[0] if rows else None

    def _records(self, statement: Any) -> list[InvoiceRecord]:
        """Run a Core select of whole invoice rows; each row as a plain `InvoiceRecord`."""
        return list(self._iter_records(statement))

    def _iter_records(self, statement: Any) -> Iterator[InvoiceRecord]:
        self._store._settle()
        with self._store.engine.connect() as connection:
            for row in connection.execute(statement):
                yield InvoiceRecord(**row._asdict())

    def _rows_in(self, column: Any, values: Sequence[Any]) -> list[InvoiceRecord]:
        """Invoices whose `column` is one of `values`, queried in chunks SQLite accepts."""
        wanted = list(dict.fromkeys(values))
        out: list[InvoiceRecord] = []
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            out.extend(self._records(select(_INVOICES).where(column.in_(chunk))))
        return out

    def get_invoices(self, kantata_ids: Sequence[str]) -> dict[str, InvoiceRecord]:
        rows = self._rows_in(_INVOICES.c.kantata_id, kantata_ids)
        return {row.kantata_id: row for row in rows}

    def retry_candidates(self, now: datetime) -> list[InvoiceRecord]:
        """Invoices a cycle must look at even if Kantata did not list them as changed: failures
        whose retry time has come, and any work left half-done by an earlier process."""
        c = _INVOICES.c
        return self._records(
            select(_INVOICES).where(
                (c.stage != "")
                | (
                    (c.status == "failed")
                    & c.next_attempt_at.is_not(None)
                    & (c.next_attempt_at <= now)
                )
                | (c.status == "pending")
            )
        )

    def by_references(self, references: Sequence[str]) -> dict[str, InvoiceRecord]:
        """The invoices pushed (or being pushed) under these references."""
        rows = self._rows_in(_INVOICES.c.reference, references)
        return {row.reference: row for row in rows if row.reference}

    def by_target_ids(self, target_ids: Sequence[str]) -> dict[str, InvoiceRecord]:
        """The invoices pushed as these ids of the accounting system."""
        rows = self._rows_in(_INVOICES.c.target_id, target_ids)
        return {row.target_id: row for row in rows if row.target_id}

    def payments_due(self) -> list[InvoiceRecord]:
        """Paid in the target, still pending in Kantata, payment not yet recorded there."""
        c = _INVOICES.c
        return self._records(
            select(_INVOICES).where(
                (c.target_state == "paid")
                & c.payment_recorded_at.is_(None)
                & (c.kantata_status == "new")
                & c.workspace_id.is_not(None)
            )
        )

    def failed_ids(self) -> list[str]:
        with self._store._session() as session:
            rows = session.exec(
                select(InvoiceRow.kantata_id).where(col(InvoiceRow.status) == "failed")
            )
            return list(rows)

    def counts(self) -> dict[str, int]:
        with self._store._session() as session:
            rows = session.exec(
                select(InvoiceRow.status, func.count()).group_by(col(InvoiceRow.status))
            )
            return {status: int(count) for status, count in rows}

    def has_credits(self) -> bool:
        """Whether any invoice in the target is a credit (a negative total)."""
        with self._store._session() as session:
            row = session.exec(
                select(InvoiceRow.kantata_id)
                .where(col(InvoiceRow.target_id).is_not(None) & (col(InvoiceRow.total_minor) < 0))
                .limit(1)
            ).first()
            return row is not None

    def invoices_with_status(self, *statuses: str, limit: int = 500) -> list[InvoiceRecord]:
        c = _INVOICES.c
        return self._records(
            select(_INVOICES)
            .where(c.status.in_(statuses))
            .order_by(c.updated_at.desc())
            .limit(limit)
        )

    def balance_warnings(self, limit: int = 200) -> list[InvoiceRecord]:
        c = _INVOICES.c
        return self._records(
            select(_INVOICES)
            .where(
                c.balance_in_cents.is_not(None)
                & c.total_minor.is_not(None)
                & (c.balance_in_cents != c.total_minor)
            )
            .limit(limit)
        )

    def events(self, kantata_id: str, limit: int = 200) -> list[InvoiceEvent]:
        with self._store._session() as session:
            rows = session.exec(
                select(InvoiceEvent)
                .where(col(InvoiceEvent.kantata_id) == kantata_id)
                .order_by(col(InvoiceEvent.id))
                .limit(limit)
            )
            return list(rows)

    def all_invoices(self) -> Iterator[InvoiceRecord]:
        yield from self._iter_records(select(_INVOICES).order_by(_INVOICES.c.kantata_id))
