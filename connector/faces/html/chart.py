"""The chart of invoices synced and failed per UTC day: plain HTML bars, no script."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from connector.faces.html.values import (
    _e,
    _int,
    _rows,
    _when,
)

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
        if d.day.day == 1 or index == 0:
            month = f'<span class="month">{d.day:%b}</span>'
        elif index == DAYS - PHONE_DAYS:  # the first day a phone shows: named there only
            month = f'<span class="month phone-first">{d.day:%b}</span>'
        else:
            month = ""
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
