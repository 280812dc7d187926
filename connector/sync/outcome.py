"""What a cycle and each invoice in it came to, and the engine's own settings."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from connector.errors import AuthError, LimitReachedError

Outcome = Literal[
    "pushed",
    "updated",
    "cancelled",
    "unchanged",
    "skipped",
    "failed",
    "conflict",
    "waiting",
    "repaired",
    "would-push",
    "would-update",
    "would-cancel",
    "stopped",
]


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
    record_payments: bool = False


CYCLE_OUTCOMES: dict[str, str] = {
    "ok": "every invoice it handled is synced or deliberately skipped",
    "failed": "the cycle ran through, but some invoices failed or are in conflict",
    "aborted": "Kantata could not be read; nothing after that point was done",
    "degraded": "reading Noko's changes (payment states) failed after the pushes, which are kept",
    "interrupted": "stopped by a signal; the next start continues where this one stopped",
}
"""The one word for how a cycle went, the same in logs, the summary line, `status`, the state
file's runs, `/healthz`, `/readyz` and the metrics (`CycleResult.final_outcome`)."""


@dataclass
class CycleResult:
    run_id: str
    kind: str
    outcome: str = "ok"
    """How the cycle itself ran: ok | aborted | degraded | interrupted. What is reported is
    `final_outcome`, which also says `failed` when invoices failed."""
    counts: Counter[str] = field(default_factory=Counter)
    failed: dict[str, str] = field(default_factory=dict)
    cursor_before: datetime | None = None
    cursor_after: datetime | None = None
    duration: float = 0.0
    pages: int = 0
    error: str | None = None
    planned: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Dry runs: Kantata id -> (would-push | would-update | would-cancel, what)."""
    auth_error: AuthError | None = None
    """The refused token that stopped the cycle (the invoices not done were left as they were)."""
    limit_reached: LimitReachedError | None = None
    """The spent request budget that ended the cycle early: not an error (`error` says when
    it resumes); the invoices not done were left as they were, the cursor stayed."""

    @property
    def final_outcome(self) -> str:
        """One of `CYCLE_OUTCOMES`: the cycle's own outcome, or `failed` when it ran through
        but invoices failed or are in conflict."""
        if self.outcome != "ok":
            return self.outcome
        return "failed" if self.failed else "ok"

    @property
    def conflicts(self) -> int:
        return self.counts["conflict"]

    @property
    def failures(self) -> int:
        """Invoices that ended failed (conflicts counted apart)."""
        return max(0, len(self.failed) - self.counts["conflict"])

    @property
    def exit_code(self) -> int:
        return 0 if self.final_outcome == "ok" else 1
