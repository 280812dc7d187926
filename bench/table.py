"""The benchmark's table: one line per cycle measured, and its cells."""

from __future__ import annotations

from bench.scenarios import Row
from bench.xero import XeroRun


def _int(value: float) -> str:
    return f"{value:,.0f}"


def _per(total: int, n: int) -> str:
    return f"{_int(total)} ({total / n:.2f})" if n else _int(total)


def _cells(row: Row) -> list[str]:
    peak = row.rss_peak_kb / 1024
    delta = (
        ""
        if row.rss_start_kb is None
        else f" ({max(0.0, (row.rss_peak_kb - row.rss_start_kb) / 1024):+.0f})"
    )
    if row.quiet:
        return [
            row.scenario,
            _int(row.n),
            f"{row.wall:.2f}",
            "—",
            _int(row.kantata),
            _int(row.noko),
            _int(row.status_429),
            "—",
            "—",
            f"{row.own_cpu * 1000:.0f} /cycle",
            _handoff_cell(row, 1),
            f"{peak:.0f}{delta}",
        ]
    share = f"{100 * row.status_429 / row.requests:.1f}%" if row.requests else "0%"
    n = row.pushed
    return [
        row.scenario + (" (stopped by time cap)" if row.stopped else ""),
        _int(n),
        f"{row.wall:.1f}",
        f"{n / row.wall:.1f}" if row.wall else "—",
        _per(row.kantata, n),
        _per(row.noko, n),
        f"{_int(row.status_429)} ({share})",
        f"{row.bound:.1f}" if row.bound is not None else "—",
        f"{100 * row.bound / row.wall:.0f}%" if row.bound is not None and row.wall else "—",
        f"{1000 * row.own_cpu / n:.2f}" if n else "—",
        _handoff_cell(row, n),
        f"{peak:.0f}{delta}",
    ]


def _handoff_cell(row: Row, n: int) -> str:
    return f"{1000 * row.handoff / n:.2f}" if row.handoff and n else "—"


HEADER = [
    "scenario",
    "N",
    "wall s",
    "invoices/s",
    "Kantata req (/inv)",
    "Noko/Xero req (/inv)",
    "429s (share)",
    "bound s",
    "of bound",
    "CPU ms/inv",
    "hand-off ms/inv",
    "peak RSS MB (+cycle)",
]


def table(rows: list[Row]) -> str:
    cells = [HEADER] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    out = []
    for index, line in enumerate(cells):
        out.append(
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
            + " |"
        )
        if index == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


# ------------------------------------------------------------------------------- the verdicts


def xero_rows(run: XeroRun) -> list[Row]:
    """The Xero run's lines of the table: the Xero requests in the Noko/Xero column, the bound
    the longer of Kantata's (pages and write-backs / 10 per s) and Xero's (requests / 1 per s)."""
    rows = []
    for index, cycle in enumerate(run.cycles):
        quiet = cycle["kind"] != "backfill"
        label = run.label
        if quiet:
            label = (
                f"  sync {cycle['later'] / 60:.0f} min later (reads the write-backs)"
                if index == 1 and cycle.get("later")
                else "  sync again, nothing new"
            )
        seen = run.breakdowns[index]
        pushed = int(cycle["counts"].get("pushed", 0))
        row = Row(
            scenario=label,
            n=run.eligible if quiet else pushed,
            wall=cycle["wall"],
            kantata=cycle["kantata"]["requests"],
            noko=cycle["xero"]["requests"],
            status_429=cycle["kantata"]["status_429"] + seen.limited,
            cpu=cycle["cpu"],
            rss_peak_kb=cycle["rss_peak_kb"],
            rss_start_kb=cycle.get("rss_start_kb"),
            quiet=quiet,
            pushed=pushed,
        )
        if not quiet:
            row.bound = max(run.bounds())
        rows.append(row)
    return rows
