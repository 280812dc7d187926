"""The page's counts, cursor line and tables (runs, failures, conflicts, warnings)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from connector.faces.html.values import (
    STATE_HINTS,
    STATE_LABELS,
    STATES,
    _duration,
    _e,
    _float,
    _int,
    _rich_text,
    _safe_link,
    _show_time,
)


def _counts(report: Mapping[str, Any]) -> str:
    counts = report.get("counts") or {}
    target = str(report.get("target") or "Noko")

    def hint(state: str) -> str:
        return STATE_HINTS.get(state, "").replace("Noko", target)

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
            f'<div class="hint">{_e(hint(state))}</div></div>'
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


def _conflicts_table(conflicts: Sequence[Mapping[str, Any]], target: str = "Noko") -> str:
    rows = []
    for row in conflicts:
        noko_id = row.get("noko_invoice_id")
        link = _safe_link(row.get("noko_link"))
        noko = _e(noko_id if noko_id is not None else "")
        if link:
            noko = f'<a href="{_e(link)}" rel="noreferrer">{noko or "open in " + _e(target)}</a>'
        rows.append(
            f'<tr data-kantata-id="{_e(row.get("kantata_invoice_id"))}">'
            f'<td class="nowrap id">{_e(row.get("kantata_invoice_id"))}</td>'
            f'<td class="nowrap">{noko}</td>'
            f'<td class="wrap why">{_e(row.get("reason"))}</td>'
            f'<td class="wrap action">{_rich_text(row.get("action"))}</td></tr>'
        )
    return _table(
        "conflicts",
        ("Kantata id", f"{target} invoice", "why", "what to do"),
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
