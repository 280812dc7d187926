"""The lines of one invoice: time entries, expenses, additional items, fixed fees and billing
milestones from the side-loaded maps, each to whole minor units."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings.kantata.fields import _map, _Reader
from mappings.kantata.records import (
    LINE_ASSOCIATIONS,
    KantataLine,
    LineKind,
)
from mappings.money import (
    MAX_ABS_MINOR,
    time_amount,
)


def _decode_lines(
    invoice_id: str, r: _Reader, body: Mapping[str, Any], currency: str
) -> list[KantataLine]:
    present = [field for field, _, _ in LINE_ASSOCIATIONS if field in r.record]
    if not present:
        raise r.fail(
            "time_entry_ids",
            "no line-item id lists on the invoice (were the line items included?)",
        )
    lines: list[KantataLine] = []
    for ids_field, map_key, kind in LINE_ASSOCIATIONS:
        side = _map(body, map_key)
        for line_id in r.ids(ids_field) or []:
            record = side.get(line_id)
            if not isinstance(record, Mapping):
                raise r.fail(ids_field, f"{kind} {line_id} is absent from the included map")
            lines.append(_decode_line(invoice_id, kind, map_key, line_id, record, currency))
    return lines


def _decode_line(
    invoice_id: str,
    kind: LineKind,
    map_key: str,
    line_id: str,
    record: Mapping[str, Any],
    currency: str,
) -> KantataLine:
    lr = _Reader(invoice_id, record, f"{map_key}[{line_id}].")
    line_currency = lr.text("currency").strip().upper()
    if line_currency and line_currency != currency:
        raise lr.fail("currency", f"{line_currency} differs from the invoice currency {currency}")
    workspace_id = lr.ident("workspace_id")
    story_id = lr.ident("story_id")
    user_id = lr.ident("user_id")
    taxable = lr.flag("taxable")
    if kind == "time_entry":
        minutes = lr.integer("time_in_minutes", required=True, minimum=0)
        rate = lr.amount("rate_in_cents")
        assert minutes is not None
        amount = time_amount(minutes, rate)
        if abs(amount) > MAX_ABS_MINOR:
            raise lr.fail("rate_in_cents", "amount exceeds the limit of ±10^13 minor units")
        # money.md: a time entry whose `billable` (or `is_billable`) is false is not billed.
        billable = lr.flag("billable", default=True) and lr.flag("is_billable", default=True)
        return KantataLine(
            kind,
            line_id,
            amount,
            taxable,
            lr.day("date_performed"),
            lr.text("notes"),
            workspace_id,
            story_id,
            user_id,
            minutes=minutes,
            rate_minor=rate,
            billable=billable,
        )
    amount = lr.amount("amount_in_cents")
    if kind == "expense":
        return KantataLine(
            kind,
            line_id,
            amount,
            taxable,
            lr.day("date"),
            lr.text("notes"),
            workspace_id,
            story_id,
            user_id,
            category=lr.text("category") or None,
        )
    if kind == "billing_milestone":
        return KantataLine(
            kind,
            line_id,
            amount,
            taxable,
            lr.day("date_to_invoice"),
            lr.text("title") or lr.text("notes"),
            workspace_id,
            story_id,
            user_id,
        )
    return KantataLine(
        kind, line_id, amount, taxable, None, lr.text("notes"), workspace_id, story_id, user_id
    )
