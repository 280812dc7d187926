"""The status report as one self-contained HTML page (`status --html FILE`).

`render_html` takes the dict of `connector.report.build_report` and returns a page with inline CSS
and an inline SVG chart: no scripts, no fonts, no images, nothing fetched, so it opens offline,
from a mail attachment or a CI artefact alike. Every value from the report is escaped.

Stable hooks for tests and scrapers: `body[data-verdict]`, `#verdict`, `#count-<state>[data-count]`,
`#cursor`, `#cursor-lag[data-seconds]`, `#chart` (an `<svg>` with one `circle.point-pushed` and one
`circle.point-failed` per cycle, `data-points` = cycles drawn), and the tables `#runs`, `#failures`,
`#conflicts`, `#warnings` whose body rows carry `data-run-id` / `data-kantata-id`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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

# Chart geometry (SVG user units; the SVG scales to the page width).
WIDTH, HEIGHT = 960, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 44, 64
X_PAD = 16
PUSHED_COLOUR = "#1a7f37"
FAILED_COLOUR = "#cf222e"


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


@dataclass(frozen=True)
class _Point:
    run_id: str
    kind: str
    outcome: str
    at: datetime
    pushed: int
    failed: int


def _chart_points(runs: Iterable[Mapping[str, Any]]) -> list[_Point]:
    points = []
    for run in runs:
        at = _when(run.get("started_at"))
        if at is None or run.get("outcome") == "running":
            continue  # a running cycle's figures are only written when it finishes
        points.append(
            _Point(
                run_id=str(run.get("run_id") or ""),
                kind=str(run.get("kind") or ""),
                outcome=str(run.get("outcome") or ""),
                at=at,
                pushed=max(_int(run.get("pushed")), 0),
                failed=max(_int(run.get("failed")), 0),
            )
        )
    points.sort(key=lambda point: point.at)  # oldest first, left to right
    return points


def _nice_step(top: int, ticks: int = 5) -> int:
    raw = max(top / ticks, 1.0)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return int(factor * magnitude)
    return int(10 * magnitude)  # pragma: no cover - the loop always returns


TIME_STEPS = (
    1, 2, 5, 10, 15, 30,
    60, 120, 300, 600, 900, 1800,
    3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600,
    86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400, 91 * 86400, 364 * 86400,
)  # fmt: skip


def _time_ticks(start: datetime, end: datetime, most: int = 6) -> tuple[list[datetime], str]:
    """Round-numbered times between start and end (every 5 min, 1 h, 1 day...) and their format."""
    span = (end - start).total_seconds()
    if span <= 0:
        return [start], "%H:%M"
    step = next((step for step in TIME_STEPS if span / step <= most), TIME_STEPS[-1])
    first = math.ceil(start.timestamp() / step) * step
    ticks = [
        datetime.fromtimestamp(first + i * step, UTC)
        for i in range(int((end.timestamp() - first) // step) + 1)
    ]
    if step >= 86400:
        label_format = "%Y-%m-%d" if step >= 28 * 86400 else "%m-%d"
    elif start.date() != end.date():
        label_format = "%m-%d %H:%M"
    else:
        label_format = "%H:%M:%S" if step < 60 else "%H:%M"
    if len(ticks) < 2:  # too short a span for round numbers: label both ends
        ticks = [start, end]
    return ticks, label_format


def _svg_text(x: float, y: float, text: str, anchor: str = "middle", cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}>{_e(text)}</text>'


def render_chart(runs: Sequence[Mapping[str, Any]]) -> str:
    """Pushed and failed invoices per cycle, oldest to newest, as an inline SVG line chart."""
    points = _chart_points(runs)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    bottom = TOP + plot_h
    out = [
        f'<svg id="chart" data-points="{len(points)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'role="img" aria-labelledby="chart-title chart-desc" '
        'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">',
        '<title id="chart-title">Invoices pushed and failed per sync cycle</title>',
        f'<desc id="chart-desc">{_plural(len(points), "cycle", "cycles")}, oldest on the left; '
        "green: invoices pushed to Noko, red: invoices that failed.</desc>",
    ]
    # Legend, top left, above the plot.
    out.append('<g id="chart-legend" class="legend">')
    for offset, (name, colour) in enumerate(
        (("synced (pushed to Noko)", PUSHED_COLOUR), ("failed", FAILED_COLOUR))
    ):
        lx = LEFT + offset * 220
        out.append(
            f'<line x1="{lx + 6}" y1="28" x2="{lx + 6}" y2="14" stroke="{colour}" '
            'stroke-width="3"/>'
            f'<circle cx="{lx + 6}" cy="13" r="4.5" fill="{colour}"/>'
            + _svg_text(lx + 18, 24, name, "start")
        )
    out.append("</g>")

    top_value = max([max(p.pushed, p.failed) for p in points] + [0])
    step = _nice_step(top_value)
    y_max = max(step * math.ceil(top_value / step), step)

    def y_of(value: int) -> float:
        return bottom - plot_h * value / y_max

    if not points:
        out.append(
            f'<line x1="{LEFT}" y1="{bottom}" x2="{LEFT + plot_w}" y2="{bottom}" class="baseline"/>'
            + _svg_text(
                LEFT + plot_w / 2, TOP + plot_h / 2, "No sync cycles recorded yet", cls="empty"
            )
            + "</svg>"
        )
        return "".join(out)

    # Y axis: grid lines and labels.
    out.append('<g id="chart-y-axis" class="axis">')
    for value in range(0, y_max + 1, step):
        y = y_of(value)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" class="grid"/>'
            + _svg_text(LEFT - 8, y + 4, str(value), "end")
        )
    out.append(
        f'<text x="16" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" class="axis-title" '
        f'transform="rotate(-90 16 {TOP + plot_h / 2:.1f})">invoices per cycle</text>'
    )
    out.append("</g>")

    start, end = points[0].at, points[-1].at
    span = (end - start).total_seconds()

    def x_of(moment: datetime) -> float:
        if span <= 0:
            return LEFT + plot_w / 2
        inner = plot_w - 2 * X_PAD  # keep the first and last cycle clear of the axes
        return LEFT + X_PAD + inner * (moment - start).total_seconds() / span

    # X axis: time ticks. One day or less: HH:MM (the date goes in the axis title).
    same_day = start.date() == end.date()
    ticks, label_format = _time_ticks(start, end)
    out.append('<g id="chart-x-axis" class="axis">')
    out.append(
        f'<line x1="{LEFT}" y1="{bottom}" x2="{LEFT + plot_w}" y2="{bottom}" class="baseline"/>'
    )
    for tick in ticks:
        x = x_of(tick)
        label = tick.strftime(label_format)
        half = len(label) * 3.8  # about half the label's width at 13 px
        anchor = "middle"
        if x + half > WIDTH - 4:
            anchor = "end"
        elif x - half < 4:
            anchor = "start"
        out.append(
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 6}" class="tick"/>'
            + _svg_text(x, bottom + 22, label, anchor)
        )
    day = start.strftime("%Y-%m-%d") if same_day else f"{start:%Y-%m-%d} to {end:%Y-%m-%d}"
    out.append(
        _svg_text(LEFT + plot_w / 2, HEIGHT - 12, f"cycle start (UTC), {day}", cls="axis-title")
    )
    out.append("</g>")

    # Series: each cycle is a separate event, so a stem from zero up to its count with a dot on
    # top (no line joining cycles, which would suggest values in between). Pushed and failed
    # stand side by side.
    labels: list[str] = []
    for series, colour, shift in (("pushed", PUSHED_COLOUR, -4), ("failed", FAILED_COLOUR, 4)):
        coords = [(x_of(p.at) + shift, y_of(getattr(p, series))) for p in points]
        out.append(f'<g id="chart-{series}" class="series" data-series="{series}">')
        for point, (x, y) in zip(points, coords, strict=True):
            if y < bottom:
                out.append(
                    f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{y:.1f}" '
                    f'stroke="{colour}" stroke-width="3" class="stem stem-{series}"/>'
                )
            value = getattr(point, series)
            label = (
                f"{point.at:%Y-%m-%d %H:%M:%S} UTC, {point.kind} cycle ({point.outcome}): "
                f"{value} {series}"
            )
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="{colour}" '
                f'class="point point-{series}" data-run-id="{_e(point.run_id)}" '
                f'data-started-at="{_e(point.at.isoformat())}" data-value="{value}">'
                f"<title>{_e(label)}</title></circle>"
            )
            if series == "failed" and value:
                # Failures are few beside hundreds pushed: say how many, above the point.
                labels.append(_svg_text(x, y - 10, str(value), cls="failed-label"))
        out.append("</g>")
    out.append(f'<g id="chart-failed-labels">{"".join(labels)}</g></svg>')
    return "".join(out)


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
        f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


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
                for key in ("seen", "pushed", "unchanged", "skipped")
            )
            + (
                f'<td class="num{" bad" if _int(run.get("failed")) else ""}">'
                f"{_int(run.get('failed'))}</td>"
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
            "unchanged",
            "skipped",
            "failed",
            "error",
        ),
        rows,
        "No sync cycles recorded yet.",
        {3, 4, 5, 6, 7, 8},
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
#chart { width: 100%; height: auto; max-height: 360px; display: block;
  border: 1px solid var(--line); border-radius: 8px; background: #fff; }
#chart text { font-size: 13px; fill: var(--muted);
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
#chart .legend text { font-size: 14px; fill: var(--ink); }
#chart .axis-title { font-size: 13px; fill: var(--ink); }
#chart .empty { font-size: 18px; }
#chart .failed-label { fill: #cf222e; font-size: 14px; font-weight: 700;
  paint-order: stroke; stroke: #fff; stroke-width: 4px; stroke-linejoin: round; }
#chart .grid { stroke: #eaeef2; stroke-width: 1; }
#chart .baseline { stroke: #8c959f; stroke-width: 1.5; }
#chart .tick { stroke: #8c959f; }
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
    drawn = len(_chart_points(runs))
    span_note = f"last {_plural(drawn, 'cycle', 'cycles')}" if drawn else "no cycles yet"
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
            "<h2>Invoices pushed and failed per cycle "
            f'<span class="n">({_e(span_note)})</span></h2>',
            "<figure>",
            render_chart(runs),
            "<figcaption>Each point is one finished sync cycle, placed at its start time; "
            "hover a point for its figures. A cycle still running is drawn once it "
            "finishes.</figcaption></figure>",
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
