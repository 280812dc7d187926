"""The report's daily activity, from the invoice histories in the state file."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# An invoice is open from a failure or conflict until it is synced, skipped, resolved,
# cancelled or gone; each change of that adds or takes one on its day.
_CHANGES_SQL = (
    "SELECT day, SUM(delta) FROM ("
    " SELECT substr(at, 1, 10) AS day,"
    "  (event IN ('failed', 'conflict'))"
    "  - LAG(event IN ('failed', 'conflict'), 1, 0)"
    "   OVER (PARTITION BY kantata_id ORDER BY id) AS delta"
    " FROM invoice_events WHERE event IN"
    "  ('failed', 'conflict', 'synced', 'skipped', 'resolved', 'cancelled', 'vanished')"
    # Only invoices that ever failed can change the count: most never do.
    "  AND kantata_id IN (SELECT kantata_id FROM invoice_events"
    "   WHERE event IN ('failed', 'conflict'))"
    ") GROUP BY day ORDER BY day"
)
_COUNTS_SQL = (
    "SELECT substr(at, 1, 10) AS day, event, COUNT(DISTINCT kantata_id)"
    " FROM invoice_events WHERE event IN ('synced', 'failed') AND substr(at, 1, 10) >= ?"
    " GROUP BY day, event"
)


def daily_activity(connection: Any, since: datetime) -> list[tuple[str, int, int, int]]:
    """Per UTC day (`YYYY-MM-DD`) from `since` on, oldest first: invoices synced that day,
    invoices that failed that day (each counted once however often it was tried), and the
    open failures (failed or in conflict) at the day's end, from the invoice histories.
    Days without activity are left out."""
    first_day = since.astimezone(UTC).strftime("%Y-%m-%d")
    changes = connection.exec_driver_sql(_CHANGES_SQL)
    deltas = [(str(day), int(delta or 0)) for day, delta in changes.all()]
    per_day: dict[str, list[int]] = {}
    for day, kind, count in connection.exec_driver_sql(_COUNTS_SQL, (first_day,)).all():
        per_day.setdefault(str(day), [0, 0])[0 if kind == "synced" else 1] = int(count)
    open_now = 0
    open_at: dict[str, int] = {}
    for day, delta in deltas:
        open_now += delta
        open_at[day] = open_now
    days = sorted({*per_day, *(day for day in open_at if day >= first_day)})
    rows = []
    carried = sum(delta for day, delta in deltas if day < first_day)
    for day in days:
        carried = open_at.get(day, carried)
        synced, failed = per_day.get(day, [0, 0])
        rows.append((day, synced, failed, carried))
    return rows
