"""The report's values read defensively (a missing or odd field shows as a dash, never a
crash), escaped for HTML; the page's verdict."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

STATES = ("synced", "failed", "conflict", "pending", "skipped")
STATE_LABELS = {
    "synced": "synced",
    "failed": "failed",
    "conflict": "conflicts",
    "pending": "pending",
    "skipped": "skipped",
}
STATE_HINTS = {
    "synced": "in Noko and verified",
    "failed": "retried or waiting for a fix",
    "conflict": "need a person",
    "pending": "in progress or waiting",
    "skipped": "drafts and cancelled",
}
STALE_AFTER_SECONDS = 3600.0
"""A cursor further behind than this makes the page say "attention needed"."""


def _e(value: object) -> str:
    """Escape anything for HTML text or a double-quoted attribute."""
    return escape("" if value is None else str(value), quote=True)


def _int(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0


def _float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _rows(value: object) -> list[Mapping[str, Any]]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        return []
    return [row for row in value if isinstance(row, Mapping)]


def _when(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _show_time(value: object) -> str:
    """An ISO timestamp as `YYYY-MM-DD HH:MM:SS UTC` (or the raw text if it is not one)."""
    moment = _when(value)
    if moment is None:
        return "" if value is None else str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _rich_text(text: object) -> str:
    """Escape text, showing `backticked` commands as <code> so they can be copied as they are."""
    parts = ("" if text is None else str(text)).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: show the text as it is
        return _e("`".join(parts))
    return "".join(
        f"<code>{_e(part)}</code>" if index % 2 else _e(part) for index, part in enumerate(parts)
    )


def _safe_link(url: object) -> str | None:
    if isinstance(url, str) and url.lower().startswith(("https://", "http://")):
        return url
    return None


# --------------------------------------------------------------------------- verdict


def _last_finished(runs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest cycle that is not still running (runs are listed newest first)."""
    return next((run for run in runs if run.get("outcome") != "running"), None)


def verdict(
    report: Mapping[str, Any], *, stale_after: float = STALE_AFTER_SECONDS
) -> tuple[bool, list[str]]:
    """(healthy, reasons): the page's headline, with each reason an operator can act on."""
    reasons: list[str] = []
    counts = report.get("counts") or {}
    failures = _rows(report.get("failures"))
    failed = max(_int(counts.get("failed")), len(failures))
    if failed:
        reasons.append(_plural(failed, "invoice failed", "invoices failed") + " (see below)")
    conflicts = max(_int(counts.get("conflict")), len(_rows(report.get("conflicts"))))
    if conflicts:
        reasons.append(
            _plural(conflicts, "conflict needs", "conflicts need") + " a decision by a person"
        )
    runs = _rows(report.get("runs"))
    last = _last_finished(runs)
    if not runs:
        reasons.append("no sync cycle has run yet")
    elif last is not None and last.get("outcome") in ("aborted", "degraded"):
        why = f": {last['error']}" if last.get("error") else ""
        when = _show_time(last.get("started_at"))
        reasons.append(f"the last cycle ({when}) {last.get('outcome')}{why}")
    lag = _float(report.get("cursor_lag_seconds"))
    if lag is not None and lag > stale_after:
        reasons.append(
            f"the cursor is {_duration(lag)} behind (more than {_duration(stale_after)}): "
            "is the daemon running?"
        )
    return not reasons, reasons
