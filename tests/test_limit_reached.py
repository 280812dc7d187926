"""A spent request budget (`LimitReachedError`, Xero's day limit) ends the cycle cleanly: no new
invoice is started, none is failed for it, no failure is written to Kantata, the cursor stays;
the run says when the target resumes, and it is not an error (exit 0)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connector.errors import LimitReachedError
from connector.faces.app import open_connector
from connector.sync.engine import SyncEngine
from connector.sync.reconcile import reconcile
from connector.targets.base import Write, Written
from sandbox import Sandbox, generate
from tests.e2e import check_books, settings_for

RESUME = datetime(2026, 12, 6, 0, 0, tzinfo=UTC)


class _Limited:
    """The real target, whose budget is spent after `allowed` creates."""

    def __init__(self, real: Any, allowed: int) -> None:
        self.real = real
        self.allowed = allowed
        self.creates = 0
        self.refused = 0

    def create(self, items: list[Write]) -> list[Written | Exception]:
        if self.creates >= self.allowed:
            self.refused += 1
            raise LimitReachedError("noko", "daily request limit reached", resume_at=RESUME)
        self.creates += len(items)
        result: list[Written | Exception] = self.real.create(items)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _failed_references(box: Sandbox) -> list[str]:
    return [
        str(inv["id"])
        for inv in box.kantata.state()["invoices"]
        for ref in inv.get("external_references", [])
        if ref.get("status") == "failed"
    ]


def test_limit_reached_ends_the_cycle_cleanly_and_the_next_one_goes_on(
    box: Sandbox, tmp_path: Path
) -> None:
    generate(box.kantata, seed=61, invoices=12, draft_rate=0, cancelled_rate=0)
    with open_connector(settings_for(box, tmp_path, kantata_sync_workers=2)) as c:
        limited = _Limited(c.engine.target, allowed=3)

        def engine() -> SyncEngine:
            return SyncEngine(
                kantata=c.kantata,
                target=limited,  # type: ignore[arg-type]
                store=c.store,
                profile=c.engine.profile,
                settings=c.engine.settings,
            )

        first = engine().run_cycle()
        assert first.exit_code == 0, (first.error, first.failed)
        assert first.final_outcome == "ok"
        assert first.limit_reached is not None
        assert first.error == f"Noko's daily limit reached; resumes after {RESUME.isoformat()}"
        assert first.failed == {}
        assert first.cursor_after is None  # the cursor stays
        assert first.counts["pushed"] == 3
        # The invoice that met the limit and those after it were left as they were.
        assert limited.refused >= 1
        assert limited.creates == 3
        assert c.store.counts().get("failed", 0) == 0
        assert _failed_references(box) == []
        (run, *_) = c.store.runs()
        assert run.outcome == "ok" and run.error == first.error  # `status` shows it

        limited.allowed = 100  # the day is over
        second = engine().run_cycle()
        assert second.exit_code == 0, second.failed
        assert second.limit_reached is None and second.error is None
        assert second.cursor_after is not None
    books = check_books(box)
    assert books.problems == []
    assert books.eligible == 12
    assert len(box.noko.state()["invoices"]) == 12


def test_reconcile_does_not_count_invoices_left_by_the_limit_as_repaired(
    box: Sandbox, tmp_path: Path
) -> None:
    """`reconcile --apply` whose repairs meet the limit says so instead of listing invoices
    it never reached as repaired."""
    generate(box.kantata, seed=62, invoices=4, draft_rate=0, cancelled_rate=0)
    with open_connector(settings_for(box, tmp_path)) as c:
        engine = SyncEngine(
            kantata=c.kantata,
            target=_Limited(c.engine.target, allowed=0),  # type: ignore[arg-type]
            store=c.store,
            profile=c.engine.profile,
            settings=c.engine.settings,
        )
        with pytest.raises(LimitReachedError):
            reconcile(engine, since=None, until=None, apply=True)
        assert c.store.counts().get("failed", 0) == 0
    assert box.noko.state()["invoices"] == []
