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

from typing import Any

from connector.faces.html.chart import DAYS, PHONE_DAYS, render_chart
from connector.faces.html.style import CSS
from connector.faces.html.tables import (
    _conflicts_table,
    _counts,
    _cursor,
    _failures_table,
    _runs_table,
    _warnings_table,
)
from connector.faces.html.values import (
    STALE_AFTER_SECONDS,
    _e,
    _last_finished,
    _plural,
    _rows,
    _show_time,
    verdict,
)

__all__ = ["STALE_AFTER_SECONDS", "render_chart", "render_html", "verdict"]


def render_html(report: dict[str, Any], *, stale_after: float = STALE_AFTER_SECONDS) -> str:
    """The whole report as one self-contained HTML page (inline CSS and SVG, no scripts)."""
    healthy, reasons = verdict(report, stale_after=stale_after)
    failures = _rows(report.get("failures"))
    conflicts = _rows(report.get("conflicts"))
    warnings = _rows(report.get("warnings"))
    runs = _rows(report.get("runs"))
    state = "healthy" if healthy else "attention"
    target = str(report.get("target") or "Noko")
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
    limited = report.get("day_limit")
    if isinstance(limited, dict) and limited.get("message"):
        detail += (
            f'<p class="sub day-limit">{_e(limited["message"])} (not a failure: the next sync '
            "tries again with one request).</p>"
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
            f"<h1>kantata-sync status: Kantata OX invoices into {_e(target)}</h1>",
            f'<section id="verdict" class="verdict {state}" data-verdict="{state}" role="status">',
            f'<p class="headline">{_e(headline)}</p>{detail}</section>',
            _counts(report),
            _cursor(report, stale_after),
            "<h2>Invoices synced and failed per day "
            f'<span class="n">(UTC, <span class="days-desktop">last {DAYS} days</span>'
            f'<span class="days-phone">last {PHONE_DAYS} days</span>)</span></h2>',
            "<figure>",
            render_chart(report),
            f"<figcaption>Green: invoices synced to {_e(target)} that day; red: invoices that "
            "failed that day, each counted once however often it was tried; amber: invoices "
            "failed or in conflict at the day's end (the backlog). Bar heights grow with the "
            "square root of the figure, so that a backfill day does not flatten the others; the "
            "figures are exact. Today's column counts so far.</figcaption></figure>",
            f'<h2>Failed invoices <span class="n">({len(failures)})</span></h2>',
            _failures_table(failures),
            f'<h2>Conflicts <span class="n">({len(conflicts)})</span></h2>',
            _conflicts_table(conflicts, target),
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
