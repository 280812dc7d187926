"""The status report as one self-contained HTML page (`status --html FILE`).

`render_html` takes the dict of `connector.faces.report.build_report` and returns a page with
inline CSS and a chart of plain HTML: no scripts, no fonts, no images, nothing fetched, so it
opens offline, from a mail attachment or a CI artefact alike. Every value from the report is
escaped.

Stable hooks for tests and scrapers: `body[data-verdict]`, `#verdict`, `#count-<state>[data-count]`,
`#cursor`, `#cursor-lag[data-seconds]`, `#chart` (one `.day[data-day][data-synced][data-failed]
[data-open]` per UTC day of the last four weeks, oldest first), and the tables `#runs`,
`#failures`, `#conflicts`, `#warnings` whose body rows carry `data-run-id` / `data-kantata-id`
and whose cells carry `data-label` (their column: a row is a card on a narrow screen).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html import escape
from typing import Any

__all__ = ["STALE_AFTER_SECONDS", "render_html", "verdict"]

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


# --------------------------------------------------------------------------- chart

DAYS = 28  # the chart's span, today included; a phone shows the last PHONE_DAYS of them
PHONE_DAYS = 14


@dataclass(frozen=True)
class _Day:
    day: date
    synced: int
    failed: int
    open_failures: int | None  # None: nothing known of that day


def _chart_days(report: Mapping[str, Any]) -> list[_Day]:
    """The last DAYS UTC days up to the report's day, oldest first, from `report["daily"]`
    (days without activity are zero; the open failures carry over from the day before)."""
    known: dict[date, Mapping[str, Any]] = {}
    for given in _rows(report.get("daily")):
        try:
            known[date.fromisoformat(str(given.get("day")))] = given
        except ValueError:
            continue
    generated = _when(report.get("generated_at"))
    last = generated.date() if generated is not None else max(known, default=None)
    if last is None:
        last = datetime.now(UTC).date()
    days = []
    carried: int | None = None
    earlier = [d for d in known if d <= last - timedelta(days=DAYS)]
    if earlier:
        carried = max(_int(known[max(earlier)].get("open_failures")), 0)
    for offset in range(DAYS - 1, -1, -1):
        day = last - timedelta(days=offset)
        row: Mapping[str, Any] | None = known.get(day)
        if row is not None and "open_failures" in row:
            carried = max(_int(row.get("open_failures")), 0)
        days.append(
            _Day(
                day=day,
                synced=max(_int(row.get("synced")), 0) if row else 0,
                failed=max(_int(row.get("failed")), 0) if row else 0,
                open_failures=carried,
            )
        )
    return days


def _compact(value: int) -> str:
    """A bar's figure in at most four characters: 987, 1.2k, 12k, 1.2M."""
    if value < 1000:
        return str(value)
    if value < 10_000:
        return f"{value / 1000:.1f}k".replace(".0k", "k")
    if value < 1_000_000:
        return f"{value // 1000}k"
    return f"{value / 1_000_000:.1f}M".replace(".0M", "M")


def render_chart(report: Mapping[str, Any]) -> str:
    """Invoices synced and failed per UTC day over the last four weeks, as bars of plain HTML
    (text stays at its CSS size at any width), with the open failures at each day's end.

    Heights are on a square-root scale, so that the day of a backfill of thousands does not
    flatten the days of a few; every bar carries its exact figure."""
    days = _chart_days(report)
    top = max([max(d.synced, d.failed) for d in days] + [0])
    # A phone shows the last PHONE_DAYS only: their bars are scaled to their own largest.
    top_recent = max([max(d.synced, d.failed) for d in days[-PHONE_DAYS:]] + [0])
    top_open = max([d.open_failures or 0 for d in days] + [0])
    active = sum(1 for d in days if d.synced or d.failed)

    def height(value: int, most: int) -> str:
        if value <= 0 or most <= 0:
            return "0"
        return f"{min(max(math.sqrt(value) / math.sqrt(most) * 100, 2.5), 100):.1f}"

    columns = []
    for index, d in enumerate(days):
        old = index < DAYS - PHONE_DAYS
        label = f"{d.day:%Y-%m-%d}: {d.synced} synced, {d.failed} failed"
        if d.open_failures is not None:
            label += f", {d.open_failures} open at the day's end"
        month = (
            f'<span class="month">{d.day:%b}</span>'
            if d.day.day == 1 or index in (0, DAYS - PHONE_DAYS)
            else ""
        )
        open_cell = (
            ""
            if d.open_failures is None
            else f'<span class="open-figure">{_compact(d.open_failures)}</span>'
        )
        open_class = "backlog" + (" some" if d.open_failures else "")
        if d.open_failures and top_open:
            open_class += " many" if d.open_failures * 2 > top_open else ""
        columns.append(
            f'<div class="day{" old" if old else ""}{" weekend" if d.day.weekday() >= 5 else ""}"'
            f' data-day="{d.day.isoformat()}" data-synced="{d.synced}" data-failed="{d.failed}"'
            f' data-open="{"" if d.open_failures is None else d.open_failures}"'
            f' title="{_e(label)}">'
            '<div class="figures">'
            f'<span class="figure synced">{_compact(d.synced) if d.synced else ""}</span>'
            f'<span class="figure failed">{_compact(d.failed) if d.failed else ""}</span></div>'
            '<div class="plot">'
            f'<div class="bar synced" style="--h:{height(d.synced, top)}%;'
            f'--h-recent:{height(d.synced, top_recent)}%"></div>'
            f'<div class="bar failed" style="--h:{height(d.failed, top)}%;'
            f'--h-recent:{height(d.failed, top_recent)}%"></div>'
            "</div>"
            f'<div class="{open_class}">{open_cell}</div>'
            f'<div class="date">{d.day.day}{month}</div></div>'
        )
    summary = (
        f"{sum(d.synced for d in days):,} invoices synced and "
        f"{sum(d.failed for d in days):,} failed over {DAYS} days up to "
        f"{days[-1].day:%Y-%m-%d}"
    )
    empty = (
        '<p class="none" id="chart-none">No invoice was synced or failed in the last four weeks.'
        "</p>"
        if not active
        else ""
    )
    return (
        f'<div id="chart" class="chart" data-days="{len(days)}" data-active-days="{active}"'
        f' data-max="{top}" role="img" aria-label="{_e(summary)}">'
        '<div class="legend" id="chart-legend">'
        '<span><i class="key synced"></i>synced</span>'
        '<span><i class="key failed"></i>failed (each invoice once a day)</span>'
        '<span><i class="key open"></i>open failures at the day\'s end</span></div>'
        f"{empty}"
        f'<div class="days">{"".join(columns)}</div></div>'
    )


# --------------------------------------------------------------------------- page parts


def _counts(report: Mapping[str, Any]) -> str:
    counts = report.get("counts") or {}
    states = list(STATES) + [str(key) for key in counts if key not in STATES]
    cards = []
    for state in states:
        value = _int(counts.get(state))
        alert = state in ("failed", "conflict") and value > 0
        klass = "count alert" if alert else "count"
        cards.append(
            f'<div class="{klass}" data-state="{_e(state)}">'
            f'<div class="figure" id="count-{_e(state)}" data-count="{value}">{value:,}</div>'
            f'<div class="label">{_e(STATE_LABELS.get(state, state))}</div>'
            f'<div class="hint">{_e(STATE_HINTS.get(state, ""))}</div></div>'
        )
    return (
        '<section class="counts" id="counts" aria-label="invoices by state">'
        f"{''.join(cards)}</section>"
    )


def _cursor(report: Mapping[str, Any], stale_after: float) -> str:
    cursor = report.get("cursor")
    lag = _float(report.get("cursor_lag_seconds"))
    if cursor:
        cursor_html = (
            f'<span id="cursor" data-cursor="{_e(cursor)}">{_e(_show_time(cursor))}</span>'
        )
    else:
        cursor_html = (
            '<span id="cursor" data-cursor="">none yet: the next sync reads everything</span>'
        )
    if lag is None:
        lag_html = '<span id="cursor-lag" data-seconds="">–</span>'
    else:
        klass = ' class="stale"' if lag > stale_after else ""
        lag_html = (
            f'<span id="cursor-lag" data-seconds="{lag:g}"{klass}>'
            f"{_e(_duration(lag))} behind</span>"
        )
    generated = _show_time(report.get("generated_at")) or "unknown"
    database = report.get("database") or {}
    written = (
        f" (written by kantata-sync {database['written_by']})" if database.get("written_by") else ""
    )
    return (
        '<section class="facts"><dl>'
        f"<div><dt>Cursor (Kantata changes read up to)</dt><dd>{cursor_html}</dd></div>"
        f"<div><dt>Cursor lag</dt><dd>{lag_html}</dd></div>"
        f'<div><dt>Report generated</dt><dd id="generated-at">{_e(generated)}</dd></div>'
        f'<div><dt>State file</dt><dd id="database">{_e(str(database.get("path", "")))}'
        f"{_e(written)}</dd></div>"
        "</dl></section>"
    )


def _table(
    table_id: str, headers: Sequence[str], rows: Sequence[str], empty: str, numeric: set[int]
) -> str:
    if not rows:
        return f'<p class="none" id="{table_id}-none">{_e(empty)}</p>'
    head = "".join(
        f'<th scope="col"{" class=num" if i in numeric else ""}>{_e(h)}</th>'
        for i, h in enumerate(headers)
    )
    return (
        f'<div class="scroll"><table id="{table_id}" class="cards"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(_labelled(row, headers) for row in rows)}</tbody></table></div>"
    )


def _labelled(row: str, headers: Sequence[str]) -> str:
    """Each cell of a row with its column's name (`data-label`): on a narrow screen a row is a
    card, and each value shows its name beside it."""
    cells = iter(headers)
    return re.sub(r"<td(?=[ >])", lambda _m: f'<td data-label="{_e(next(cells))}"', row)


def _runs_table(runs: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for run in runs:
        duration = _float(run.get("duration_seconds"))
        outcome = str(run.get("outcome") or "")
        rows.append(
            f'<tr data-run-id="{_e(run.get("run_id"))}" data-outcome="{_e(outcome)}">'
            f'<td class="nowrap">{_e(_show_time(run.get("started_at")))}</td>'
            f"<td>{_e(run.get('kind'))}</td>"
            f'<td><span class="badge outcome-{_e(outcome)}">{_e(outcome)}</span></td>'
            f'<td class="num">{"" if duration is None else f"{duration:.1f}"}</td>'
            + "".join(
                f'<td class="num">{_int(run.get(key))}</td>'
                for key in ("seen", "pushed", "updated", "unchanged", "skipped")
            )
            + "".join(
                f'<td class="num{" bad" if _int(run.get(key)) else ""}">{_int(run.get(key))}</td>'
                for key in ("conflicts", "failed")
            )
            + f'<td class="wrap">{_e(run.get("error") or "")}</td></tr>'
        )
    return _table(
        "runs",
        (
            "started",
            "kind",
            "outcome",
            "seconds",
            "seen",
            "pushed",
            "updated",
            "unchanged",
            "skipped",
            "conflicts",
            "failed",
            "error",
        ),
        rows,
        "No sync cycles recorded yet.",
        {3, 4, 5, 6, 7, 8, 9, 10},
    )


def _failures_table(failures: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for row in failures:
        next_at = _show_time(row.get("next_attempt_at")) or "–"
        rows.append(
            f'<tr data-kantata-id="{_e(row.get("kantata_invoice_id"))}">'
            f'<td class="nowrap id">{_e(row.get("kantata_invoice_id"))}</td>'
            f'<td class="nowrap num">{_e(row.get("amount") or "")}</td>'
            f"<td>{_e(row.get('error_kind') or '')}</td>"
            f'<td class="num">{_int(row.get("attempts"))}</td>'
            f'<td class="nowrap">{_e(next_at)}</td>'
            f'<td class="wrap why">{_e(row.get("error"))}</td>'
            f'<td class="wrap action">{_rich_text(row.get("action"))}</td></tr>'
        )
    return _table(
        "failures",
        ("Kantata id", "amount", "kind", "attempts", "next attempt", "why", "what to do"),
        rows,
        "No failed invoices.",
        {1, 3},
    )


def _conflicts_table(conflicts: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for row in conflicts:
        noko_id = row.get("noko_invoice_id")
        link = _safe_link(row.get("noko_link"))
        noko = _e(noko_id if noko_id is not None else "")
        if link:
            noko = f'<a href="{_e(link)}" rel="noreferrer">{noko or "open in Noko"}</a>'
        rows.append(
            f'<tr data-kantata-id="{_e(row.get("kantata_invoice_id"))}">'
            f'<td class="nowrap id">{_e(row.get("kantata_invoice_id"))}</td>'
            f'<td class="nowrap">{noko}</td>'
            f'<td class="wrap why">{_e(row.get("reason"))}</td>'
            f'<td class="wrap action">{_rich_text(row.get("action"))}</td></tr>'
        )
    return _table(
        "conflicts",
        ("Kantata id", "Noko invoice", "why", "what to do"),
        rows,
        "No conflicts.",
        set(),
    )


def _warnings_table(warnings: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        f'<tr data-kantata-id="{_e(row.get("kantata_invoice_id"))}">'
        f'<td class="nowrap id">{_e(row.get("kantata_invoice_id"))}</td>'
        f'<td class="wrap">{_e(row.get("message"))}</td></tr>'
        for row in warnings
    ]
    return _table("warnings", ("Kantata id", "warning"), rows, "No warnings.", set())


CSS = """
:root { color-scheme: light; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700;
  --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --panel: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; color: var(--ink); background: #fff;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1200px; margin: 0 auto; }
h1 { font-size: 20px; margin: 0 0 14px; color: var(--muted); font-weight: 600; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
h2 .n { color: var(--muted); font-weight: 400; }
.verdict { border-radius: 8px; padding: 16px 20px; border: 2px solid; }
.verdict.healthy { border-color: var(--ok); background: #dafbe1; }
.verdict.attention { border-color: var(--bad); background: #ffebe9; }
.verdict .headline { font-size: 28px; font-weight: 700; margin: 0; }
.verdict.healthy .headline { color: var(--ok); }
.verdict.attention .headline { color: var(--bad); }
.verdict ul { margin: 8px 0 0; padding-left: 22px; font-size: 16px; }
.verdict p.sub { margin: 6px 0 0; font-size: 16px; }
.counts { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr));
  gap: 12px; margin: 20px 0 8px; }
.count { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 12px 16px; }
.count .figure { font-size: 40px; font-weight: 700; line-height: 1.1;
  font-variant-numeric: tabular-nums; }
.count .label { font-size: 15px; font-weight: 600; text-transform: uppercase;
  letter-spacing: .04em; color: var(--muted); }
.count .hint { font-size: 13px; color: var(--muted); }
.count.alert { border-color: var(--bad); background: #fff5f5; }
.count.alert .figure, .count.alert .label { color: var(--bad); }
.count[data-state="synced"] .figure { color: var(--ok); }
.facts dl { display: flex; flex-wrap: wrap; gap: 8px 40px; margin: 12px 0 0; }
.facts dt { font-size: 13px; color: var(--muted); }
.facts dd { margin: 0; font-size: 16px; font-weight: 600; }
.stale, td.bad { color: var(--bad); font-weight: 600; }
figure { margin: 0; }
.chart { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px 6px;
  background: #fff; }
.chart .legend { display: flex; flex-wrap: wrap; gap: 4px 18px; font-size: 14px;
  margin-bottom: 6px; }
.chart .key { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
  margin-right: 6px; vertical-align: -1px; }
.key.synced, .bar.synced { background: var(--ok); }
.key.failed, .bar.failed { background: var(--bad); }
.key.open { background: #f5d48b; border: 1px solid var(--warn); }
.chart .days { display: flex; align-items: stretch; gap: 2px; }
.chart .day { flex: 1 1 0; min-width: 0; display: flex; flex-direction: column; }
.chart .day.weekend .plot { background: #f6f8fa; }
.chart .figures { display: flex; flex-direction: column; align-items: center;
  font-size: 12px; line-height: 15px; font-variant-numeric: tabular-nums; white-space: nowrap; }
.chart .figure { min-height: 15px; }
.chart .figure.synced { color: var(--ok); }
.chart .figure.failed { color: var(--bad); font-weight: 700; }
.chart .plot { height: 160px; display: flex; align-items: flex-end; justify-content: center;
  gap: 1px; border-bottom: 1.5px solid #8c959f; }
.chart .bar { width: 42%; max-width: 16px; border-radius: 2px 2px 0 0; height: var(--h); }
.chart .backlog { height: 20px; margin-top: 3px; font-size: 12px; line-height: 20px;
  text-align: center; color: var(--muted); border-radius: 3px; }
.chart .backlog.some { background: #fff1cc; color: var(--warn); font-weight: 600; }
.chart .backlog.many { background: #f5d48b; }
.chart .date { font-size: 12px; text-align: center; color: var(--muted); line-height: 15px;
  padding-top: 2px; font-variant-numeric: tabular-nums; }
.chart .month { display: block; font-weight: 600; color: var(--ink); }
.days-phone { display: none; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 4px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; vertical-align: top; padding: 6px 10px;
  border-bottom: 1px solid var(--line); }
thead th { background: var(--panel); font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fbfcfd; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.nowrap { white-space: nowrap; }
.wrap { overflow-wrap: anywhere; }
td.id { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
td.why { min-width: 200px; }
td.action { min-width: 300px; }
@media (max-width: 700px) {
  body { padding: 12px 10px 32px; }
  h2 { font-size: 17px; }
  .verdict .headline { font-size: 24px; }
  .counts { grid-template-columns: repeat(auto-fit, minmax(96px, 1fr)); gap: 8px; }
  .count { padding: 8px 10px; }
  .count .figure { font-size: 28px; }
  .count .label { font-size: 13px; }
  .count .hint { font-size: 12px; }
  .facts dl { gap: 8px 24px; }
  .chart { padding: 8px 6px 4px; }
  .chart .day.old { display: none; }
  .chart .bar { height: var(--h-recent); }
  .chart .figures, .chart .backlog, .chart .date { font-size: 11px; }
  .chart .legend { font-size: 13px; }
  .days-desktop { display: none; }
  .days-phone { display: inline; }
  .scroll { overflow-x: visible; }
  table.cards, table.cards tbody, table.cards tr, table.cards td { display: block; }
  table.cards thead { position: absolute; width: 1px; height: 1px; overflow: hidden;
    clip: rect(0 0 0 0); }
  table.cards tr { border: 1px solid var(--line); border-radius: 8px; margin: 0 0 10px;
    padding: 4px 10px; background: #fff; }
  table.cards tbody tr:nth-child(even) { background: #fff; }
  table.cards td { border: 0; padding: 3px 0 3px 8.5em; position: relative; min-width: 0;
    text-align: left; white-space: normal; overflow-wrap: anywhere; }
  table.cards td::before { content: attr(data-label); position: absolute; left: 0; top: 3px;
    width: 8.5em; color: var(--muted); white-space: nowrap;
    font: 600 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
    overflow: hidden; text-overflow: ellipsis; }
  table.cards td.why, table.cards td.action, table.cards td.wrap { padding-left: 0; }
  table.cards td.why::before, table.cards td.action::before, table.cards td.wrap::before {
    position: static; display: block; width: auto; }
  table.cards td:empty { display: none; }
  code { white-space: normal; overflow-wrap: anywhere; }
}
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px;
  background: #eff1f3; padding: 1px 4px; border-radius: 4px; white-space: nowrap; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 13px;
  font-weight: 600; background: #eaeef2; }
.badge.outcome-ok { background: #dafbe1; color: var(--ok); }
.badge.outcome-failed, .badge.outcome-aborted,
.badge.outcome-degraded { background: #ffebe9; color: var(--bad); }
.badge.outcome-interrupted, .badge.outcome-running { background: #fff8c5; color: var(--warn); }
p.none { color: var(--muted); margin: 6px 0; }
footer { margin-top: 36px; font-size: 13px; color: var(--muted); }
@media print { body { padding: 0; } .scroll { overflow: visible; } }
"""


def render_html(report: dict[str, Any], *, stale_after: float = STALE_AFTER_SECONDS) -> str:
    """The whole report as one self-contained HTML page (inline CSS and SVG, no scripts)."""
    healthy, reasons = verdict(report, stale_after=stale_after)
    failures = _rows(report.get("failures"))
    conflicts = _rows(report.get("conflicts"))
    warnings = _rows(report.get("warnings"))
    runs = _rows(report.get("runs"))
    state = "healthy" if healthy else "attention"
    if healthy:
        headline = "Healthy"
        detail = '<p class="sub">No failed or conflicting invoices'
        last = _last_finished(runs)
        if last is not None:
            detail += (
                f"; the last cycle ({_e(_show_time(last.get('started_at')))}) ended "
                f"<strong>{_e(last.get('outcome'))}</strong>"
            )
        if runs[0].get("outcome") == "running":
            detail += f"; a cycle is running since {_e(_show_time(runs[0].get('started_at')))}"
        detail += ".</p>"
    else:
        headline = "Attention needed"
        detail = "<ul>" + "".join(f"<li>{_e(reason)}</li>" for reason in reasons) + "</ul>"
    if warnings:
        detail += (
            f'<p class="sub">{_e(_plural(len(warnings), "warning", "warnings"))} '
            "to review (see Warnings below).</p>"
        )
    title = f"kantata-sync status: {headline.lower()}"
    return "".join(
        [
            "<!DOCTYPE html>\n",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>",
            f"<style>{CSS}</style></head>",
            f'<body data-verdict="{state}"><main>',
            "<h1>kantata-sync status: Kantata OX invoices into Noko</h1>",
            f'<section id="verdict" class="verdict {state}" data-verdict="{state}" role="status">',
            f'<p class="headline">{_e(headline)}</p>{detail}</section>',
            _counts(report),
            _cursor(report, stale_after),
            "<h2>Invoices synced and failed per day "
            f'<span class="n">(UTC, <span class="days-desktop">last {DAYS} days</span>'
            f'<span class="days-phone">last {PHONE_DAYS} days</span>)</span></h2>',
            "<figure>",
            render_chart(report),
            "<figcaption>Green: invoices synced to Noko that day; red: invoices that failed "
            "that day, each counted once however often it was tried; amber: invoices failed or "
            "in conflict at the day's end (the backlog). Bar heights grow with the square root "
            "of the figure, so that a backfill day does not flatten the others; the figures "
            "are exact. Today's column counts so far.</figcaption></figure>",
            f'<h2>Failed invoices <span class="n">({len(failures)})</span></h2>',
            _failures_table(failures),
            f'<h2>Conflicts <span class="n">({len(conflicts)})</span></h2>',
            _conflicts_table(conflicts),
            f'<h2>Warnings <span class="n">({len(warnings)})</span></h2>',
            _warnings_table(warnings),
            f'<h2>Last cycles <span class="n">({len(runs)})</span></h2>',
            _runs_table(runs),
            "<footer>Generated by kantata-sync. Times are UTC. "
            "<code>kantata-sync status</code> shows the same report on a terminal, "
            "<code>kantata-sync status --json</code> as JSON.</footer>",
            "</main></body></html>\n",
        ]
    )
