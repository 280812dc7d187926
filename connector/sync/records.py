"""What the engine records of one invoice when it does not reach its goal: a failure (retried
later, or left for a person), and the small record edits the other parts share."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from connector.state.store import InvoiceRecord, Store
from connector.sync.outcome import EngineSettings, Outcome
from mappings.kantata import KantataInvoice


class Records:
    """Failures and retry times, written to the store."""

    def __init__(
        self, store: Store, settings: EngineSettings, clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    def retry_at(self, attempts: int) -> datetime:
        """Next try after `attempts` failures: a delay doubling from the initial one, capped."""
        delay = min(
            self.settings.retry_initial_delay * (2 ** max(attempts - 1, 0)),
            self.settings.retry_max_delay,
        )
        return self.clock() + timedelta(seconds=delay)

    def fail(
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
            record.next_attempt_at = self.retry_at(record.attempts)
        else:
            record.next_attempt_at = None
        self.store.save_invoice(record, run_id=run_id, event="failed", detail=f"{kind}: {message}")
        log.warning("invoice failed", error_kind=kind, error=message, attempts=record.attempts)
        return "failed", message

    def record_failure(self, kantata_id: str, message: str, run_id: str) -> None:
        """Keep any failure in the store, retried later, so no invoice is silently left out
        when the cursor moves on. The stage is kept: recovery resumes where work stopped."""
        record = self.store.get_invoice(kantata_id) or self.store.new_invoice(kantata_id)
        if record.status != "conflict":
            record.status = "failed"
        record.attempts += 1
        record.last_error = message
        record.error_kind = record.error_kind or "transient"
        record.next_attempt_at = self.retry_at(record.attempts)
        self.store.save_invoice(record, run_id=run_id, event="failed", detail=message)


def forget_target(record: InvoiceRecord, *, recover: bool) -> None:
    """The target's invoice is gone: the next push makes a new one. With `recover`, that push
    first reuses or removes what the old one left behind."""
    record.target_id = None
    record.target_link = None
    record.target_state = None
    record.target_lines = None
    if recover:
        record.stage = "pushing"


def remember_kantata(record: InvoiceRecord, inv: KantataInvoice) -> None:
    record.kantata_status = inv.status
    record.workspace_id = inv.workspaces[0].id if len(inv.workspaces) == 1 else None
    record.kantata_updated_at = inv.updated_at
    record.source_fingerprint = inv.source_fingerprint
