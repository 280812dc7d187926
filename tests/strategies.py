"""Hypothesis strategies for Kantata invoice pages, and an independent model of the money
rules (money.md) to check decoded totals against; shared by the mapping and planner tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

CURRENCIES = {"USD": 100, "JPY": 1, "KWD": 1000, "EUR": 100}
EXPONENT = {"USD": 2, "JPY": 0, "KWD": 3, "EUR": 2}
KINDS = {
    # kind: (invoice id field, include map key, line key prefix)
    "time_entry": ("time_entry_ids", "time_entries", "te"),
    "expense": ("expense_ids", "expenses", "ex"),
    "additional_item": ("additional_item_ids", "additional_items", "ai"),
    "fixed_fee_item": ("fixed_fee_item_ids", "fixed_fee_items", "ff"),
    "billing_milestone": ("billing_milestone_ids", "billing_milestones", "bm"),
}
amounts = st.one_of(st.just(0), st.integers(min_value=-(10**9), max_value=10**9))
notes = st.one_of(st.none(), st.text(max_size=300), st.just("see [KS-1/te1] or a/b"))


@st.composite
def _decimal_rates(draw: st.DrawFn) -> Decimal:
    decimals = draw(st.integers(0, 3))
    return Decimal(draw(st.integers(0, 100 * 10**decimals))).scaleb(-decimals)


# None (no tax), rates Noko cannot hold (8.875, 0.005), rates it can, and random 0-3 decimals,
# as JSON parsed with parse_float=Decimal gives them.
tax_rates = st.one_of(
    st.none(),
    st.sampled_from([Decimal(r) for r in ("8.875", "10.0", "19", "7.25", "0.005", "100", "0")]),
    _decimal_rates(),
)


@st.composite
def line_records(draw: st.DrawFn, kind: str, workspace_ids: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    taxable = draw(st.sampled_from([True, False, None, "absent"]))
    if taxable != "absent":
        record["taxable"] = taxable
    if kind == "time_entry":
        record["time_in_minutes"] = draw(st.integers(0, 10_000))
        record["rate_in_cents"] = draw(st.one_of(st.just(0), st.integers(-(10**5), 10**7)))
        record["date_performed"] = f"2024-02-{draw(st.integers(1, 28)):02d}"
        billable = draw(st.sampled_from(["absent", True, False]))
        if billable != "absent":
            record[draw(st.sampled_from(["billable", "is_billable"]))] = billable
    else:
        record["amount_in_cents"] = draw(amounts)
    if kind == "expense":
        record["date"] = f"2024-02-{draw(st.integers(1, 28)):02d}"
        record["category"] = draw(st.sampled_from([None, "Travel", "Hotel [night]"]))
    if kind == "billing_milestone":
        record["title"] = draw(notes)
    record["notes"] = draw(notes)
    record["story_id"] = draw(st.sampled_from([None, "31", "32"]))
    record["workspace_id"] = draw(st.sampled_from([None, *workspace_ids]))
    return record


@st.composite
def invoice_pages(draw: st.DrawFn) -> dict[str, Any]:
    """A one-invoice GET /invoices page with 0-12 lines of the five kinds, side-loaded."""
    invoice_id = str(draw(st.integers(1, 10**9)))
    currency = draw(st.sampled_from(sorted(CURRENCIES)))
    workspace_ids = draw(st.sampled_from([["71"], ["71", "72"]]))
    record: dict[str, Any] = {
        "id": invoice_id,
        "updated_at": "2024-03-02T10:30:00-08:00",
        "invoice_date": "2024-03-01",
        "status": "new",
        "title": "Invoice #00042",
        "user_invoice_number": draw(st.integers(1, 99999)),
        "currency": currency,
        "currency_base_unit": CURRENCIES[currency],
        "workspace_ids": workspace_ids,
    }
    rate = draw(tax_rates)
    if rate is not None:
        record["tax_rate"] = rate
    body: dict[str, Any] = {
        "count": 1,
        "results": [{"key": "invoices", "id": invoice_id}],
        "invoices": {invoice_id: record},
        "workspaces": {ws: {"id": ws, "title": f"Project {ws}"} for ws in workspace_ids},
    }
    kinds = draw(st.lists(st.sampled_from(sorted(KINDS)), max_size=12))
    for ids_field, map_key, _ in KINDS.values():
        record[ids_field] = []
        body[map_key] = {}
    for number, kind in enumerate(kinds, start=1):
        ids_field, map_key, _ = KINDS[kind]
        line_id = str(1000 + number)
        record[ids_field].append(line_id)
        body[map_key][line_id] = {"id": line_id, **draw(line_records(kind, workspace_ids))}
    # Kantata states its own total; as in the recorded responses, it is the lines' total.
    record["balance_in_cents"] = kantata_model(body)[3]
    return body


def half_up(numerator: int, denominator: int) -> int:
    """Integer-only half-away-from-zero division, independent of Decimal."""
    sign = -1 if (numerator < 0) != (denominator < 0) else 1
    return sign * ((2 * abs(numerator) + abs(denominator)) // (2 * abs(denominator)))


def kantata_model(body: dict[str, Any]) -> tuple[int, int, int, int]:
    """(subtotal, taxable subtotal, tax, total) straight from the raw page, per money.md."""
    (invoice_id,) = body["invoices"]
    record = body["invoices"][invoice_id]
    subtotal = taxable = 0
    for ids_field, map_key, _ in KINDS.values():
        for line_id in record[ids_field]:
            line = body[map_key][line_id]
            if line.get("billable") is False or line.get("is_billable") is False:
                continue  # money.md: not billed
            if "time_in_minutes" in line:
                amount = half_up(line["time_in_minutes"] * line["rate_in_cents"], 60)
            else:
                amount = line["amount_in_cents"]
            subtotal += amount
            if line.get("taxable") is True:
                taxable += amount
    rate = record.get("tax_rate") or Decimal(0)
    exponent = rate.as_tuple().exponent
    assert isinstance(exponent, int)
    places = max(-exponent, 0)
    tax = half_up(taxable * int(rate.scaleb(places)), 100 * 10**places)
    return subtotal, taxable, tax, subtotal + tax
