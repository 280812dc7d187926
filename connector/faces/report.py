"""The status report: what is synced, what failed and why, and what to do about it.

`build_report` reads the state store into one plain dict (the `status --json` document);
`render_table` draws it for people on a terminal.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from connector.http.text import clean
from connector.state.store import InvoiceRecord, Store
from mappings.money import format_money

STATES = ("synced", "failed", "conflict", "pending", "skipped")
DAYS_CHARTED = 28
"""The report's `daily` series covers this many UTC days, today included."""

ACTIONS = {
    "mapping": "Fix the field named in the error in Kantata; the invoice is retried as soon as "
    "it changes (or run `kantata-sync retry {id}`).",
    "unfit": "{target} cannot hold it exactly (the error names why): enable the currency in "
    "{target}, or name the account or tax type in the profile, then run "
    "`kantata-sync retry {id}`.",
    "permanent": "{target} refused it: fix the cause named in the error, then run "
    "`kantata-sync retry {id}`.",
    "transient": "Retried automatically{when}; if it keeps failing, run `kantata-sync doctor`.",
    "writeback": "It is in {target}; writing the reference to Kantata is retried "
    "automatically{when}.",
    "verify": "{target}'s totals differ from Kantata's (the error names both, and whether the "
    "{target} invoice just created was deleted again): find why {target} computes differently "
    "and correct it (or the {target} invoice, if it is still there), then run "
    "`kantata-sync retry {id} --force`.",
    "duplicate": "Delete the extra {target} invoices named in the error, then run "
    "`kantata-sync retry {id}`.",
    "refused": "Kantata changed after {target} was paid or locked: correct the books in "
    "{target} by hand (credit note), then run `kantata-sync resolve {id}`.",
    "gone": "The {target} invoice was deleted in {target}: run `kantata-sync reconcile --apply` "
    "(or `kantata-sync retry {id} --force`) to push the Kantata invoice again as a new "
    "{target} invoice.",
    "noko-edited": "The {target} invoice was changed by hand: run "
    "`kantata-sync retry {id} --force` (or `kantata-sync reconcile --apply`) to restore the "
    "Kantata version, or `kantata-sync resolve {id}` to keep the hand edit.",
    "lifecycle": "Void the {target} invoice (credit note or refund) and run "
    "`kantata-sync resolve {id}`; or delete it in {target} and run "
    "`kantata-sync retry {id} --force`.",
}
ACTIONS["target-edited"] = ACTIONS["noko-edited"]

DAY_LIMIT = re.compile(r"daily limit reached(?:; resumes after (?P<when>[^;]+))?", re.IGNORECASE)
"""How a cycle that ran out of the target's day budget says so (`LimitReachedError`): not a
failure; the next cycle tries again."""
DAY_LIMIT_OUTCOME = "day-limit"


def day_limit(error: str | None) -> str | None:
    """The moment a day limit lifts, as announced ('' when not stated), or None when `error`
    is not a day limit."""
    match = DAY_LIMIT.search(error or "")
    if match is None:
        return None
    return (match.group("when") or "").strip()


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def action_for(record: InvoiceRecord, target: str = "Noko") -> str:
    template = ACTIONS.get(record.error_kind or "", "Run `kantata-sync show {id}` for details.")
    when = f" at {_iso(record.next_attempt_at)}" if record.next_attempt_at else ""
    return template.format(id=record.kantata_id, when=when, target=target)


def _safe(text: str) -> str:
    """Stored text that came from outside, fit for a terminal, a page or JSON: no secret
    fragment, no control character (older state files may hold either)."""
    return clean(text)


def _amount(record: InvoiceRecord) -> str | None:
    if record.total_minor is None or record.exponent is None or not record.currency:
        return None
    return format_money(record.total_minor, record.exponent, record.currency)


def _outcome(outcome: str, error: str | None) -> str:
    """A finished cycle that ended on the target's day limit shows as `day-limit`: no invoice
    failed for it, and the next cycle goes on. One whose invoices failed as well stays
    `failed` (its failures are listed); the day-limit line says the rest."""
    if outcome not in ("running", "failed") and day_limit(error) is not None:
        return DAY_LIMIT_OUTCOME
    return outcome


def build_report(
    store: Store, *, now: datetime | None = None, limit: int = 200, target: str = "Noko"
) -> dict[str, Any]:
    """Everything `status` shows, as plain JSON-ready data; `target` names the accounting
    system (`Noko`, `Xero`) in the texts."""
    now = now or datetime.now(UTC)
    counts = dict.fromkeys(STATES, 0)
    counts.update(store.counts())
    cursor = store.get_cursor()
    failures = []
    for record in store.invoices_with_status("failed", "pending", limit=limit):
        if record.status == "pending" and not record.last_error:
            continue
        failures.append(
            {
                "kantata_invoice_id": record.kantata_id,
                "error": _safe(record.last_error or "interrupted before it finished"),
                "error_kind": record.error_kind,
                "attempts": record.attempts,
                "next_attempt_at": _iso(record.next_attempt_at),
                "noko_invoice_id": record.target_id,
                "amount": _amount(record),
                "action": action_for(record, target),
            }
        )
    conflicts = [
        {
            "kantata_invoice_id": record.kantata_id,
            "reason": _safe(record.last_error or ""),
            "noko_invoice_id": record.target_id,
            "noko_link": record.target_link,
            "action": action_for(record, target),
        }
        for record in store.invoices_with_status("conflict", limit=limit)
    ]
    warnings = [
        {
            "kantata_invoice_id": record.kantata_id,
            "message": (
                f"Kantata balance_in_cents {record.balance_in_cents} differs from the total "
                f"computed from its lines ({record.total_minor}); the computed total was used"
            ),
        }
        for record in store.balance_warnings(limit=limit)
    ]
    runs = [
        {
            "run_id": run.run_id,
            "kind": run.kind,
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "duration_seconds": round((run.finished_at - run.started_at).total_seconds(), 3)
            if run.finished_at
            else None,
            "outcome": _outcome(run.outcome, run.error),
            "seen": run.seen,
            "pushed": run.pushed,
            "updated": run.updated,
            "unchanged": run.unchanged,
            "skipped": run.skipped,
            "conflicts": run.conflicts,
            "failed": run.failed,
            "error": _safe(run.error) if run.error else run.error,
        }
        for run in store.runs(limit=20)
    ]
    first_day = (now - timedelta(days=DAYS_CHARTED - 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    daily = [
        {"day": day, "synced": synced, "failed": failed, "open_failures": still_open}
        for day, synced, failed, still_open in store.daily_activity(first_day)
    ]
    last = next((run for run in runs if run["outcome"] != "running"), None)
    limited = None
    message = str(last["error"] or "") if last is not None else ""
    if last is not None and day_limit(message) is not None:
        limited = {
            "message": message,
            "resumes_after": day_limit(message) or None,
            "run_id": last["run_id"],
        }
    return {
        "generated_at": _iso(now),
        "target": target,
        "day_limit": limited,
        "database": store.describe(),
        "counts": counts,
        "cursor": _iso(cursor),
        "cursor_lag_seconds": round((now - cursor).total_seconds(), 1) if cursor else None,
        "failures": failures,
        "conflicts": conflicts,
        "warnings": warnings,
        "runs": runs,
        "daily": daily,
    }


def render_table(report: dict[str, Any], console: Console) -> None:
    """The report for people: counts, cursor, last cycles, then every problem with its fix."""
    counts = report["counts"]
    summary = Table(title="kantata-sync status", show_header=True, header_style="bold")
    for state in counts:
        summary.add_column(state, justify="right")
    summary.add_row(*(str(counts[state]) for state in counts))
    console.print(summary)
    database = report.get("database") or {}
    written = database.get("written_by")
    console.print(
        Text(
            f"State file: {database.get('path', '?')}"
            + (f" (written by kantata-sync {written})" if written else "")
        )
    )
    lag = report["cursor_lag_seconds"]
    console.print(
        Text(
            f"Cursor: {report['cursor'] or 'none yet (the next sync reads everything)'}"
            + (f"  (lag {lag:.0f} s)" if lag is not None else "")
        )
    )
    limited = report.get("day_limit")
    if limited:
        console.print(
            Text(f"{limited['message']}", style="yellow")
            + Text(" (not a failure: the next sync tries again with one request)")
        )
    if report["runs"]:
        runs = Table(title="Last cycles", header_style="bold")
        counted = ("seen", "pushed", "updated", "conflicts", "failed")
        for column in ("started", "kind", "outcome", "seconds", *counted):
            runs.add_column(column, justify="right" if column in counted else "left")
        for run in report["runs"][:10]:
            runs.add_row(
                run["started_at"] or "",
                run["kind"],
                run["outcome"],
                "" if run["duration_seconds"] is None else f"{run['duration_seconds']:.1f}",
                *(str(run.get(key, 0)) for key in counted),
            )
        console.print(runs)
    for title, rows, key in (
        ("Failed invoices", report["failures"], "error"),
        ("Conflicts", report["conflicts"], "reason"),
    ):
        if not rows:
            continue
        table = Table(title=title, header_style="bold", show_lines=True)
        table.add_column("Kantata id", no_wrap=True)
        table.add_column("why")
        table.add_column("what to do")
        for row in rows:
            table.add_row(Text(row["kantata_invoice_id"]), Text(row[key]), Text(row["action"]))
        console.print(table)
    for warning in report["warnings"]:
        console.print(
            Text("warning ", style="yellow")
            + Text(f"invoice {warning['kantata_invoice_id']}: {warning['message']}")
        )
    if not report["failures"] and not report["conflicts"]:
        console.print("No failed or conflicting invoices.")
