"""The state file's record of runs (one per cycle) and of what the webhook was told."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlmodel import col, select

from connector.http.text import clean
from connector.state.models import NotificationRecord, RunRecord

if TYPE_CHECKING:
    from connector.state.store import Store


def utcnow() -> datetime:
    return datetime.now(UTC)


class RunLog:
    """Runs and notifications, written through the store's sessions."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def start_run(self, run_id: str, kind: str, cursor: datetime | None) -> RunRecord:
        run = RunRecord(run_id=run_id, kind=kind, started_at=utcnow(), cursor_before=cursor)
        with self._store._tx() as session:
            session.add(run)
        return run

    def finish_run(self, run: RunRecord) -> None:
        run.finished_at = run.finished_at or utcnow()
        if run.error:
            run.error = clean(run.error, 2000)
        with self._store._tx() as session:
            session.merge(run)

    def runs(self, limit: int = 20) -> list[RunRecord]:
        with self._store._session() as session:
            rows = session.exec(select(RunRecord).order_by(col(RunRecord.id).desc()).limit(limit))
            return list(rows)

    def last_run_with_outcome(self, *outcomes: str) -> RunRecord | None:
        """The most recent finished run whose outcome is one of `outcomes`."""
        with self._store._session() as session:
            return session.exec(
                select(RunRecord)
                .where(col(RunRecord.outcome).in_(outcomes))
                .order_by(col(RunRecord.id).desc())
                .limit(1)
            ).first()

    def notified(self) -> dict[str, str]:
        """Kantata id -> the status (failed | conflict) the webhook was last told about."""
        with self._store._session() as session:
            return {n.kantata_id: n.status for n in session.exec(select(NotificationRecord))}

    def set_notified(self, told: dict[str, str], cleared: Sequence[str]) -> None:
        """Record what the webhook was just told: problems now notified, problems cleared."""
        now = utcnow()
        with self._store._tx() as session:
            for kantata_id in cleared:
                row = session.get(NotificationRecord, kantata_id)
                if row is not None:
                    session.delete(row)
            for kantata_id, status in told.items():
                session.merge(
                    NotificationRecord(kantata_id=kantata_id, status=status, notified_at=now)
                )

    def close_stale_runs(self) -> None:
        """Runs still marked running belong to a process that died: mark them interrupted."""
        with self._store._tx() as session:
            for run in session.exec(select(RunRecord).where(col(RunRecord.outcome) == "running")):
                run.outcome = "interrupted"
                run.finished_at = run.finished_at or utcnow()
                session.add(run)
