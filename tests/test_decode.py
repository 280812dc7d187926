"""Decoding Kantata invoice pages: every malformed field is a MappingError naming invoice and
field, and one bad invoice never spoils the rest of its page."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from mappings.errors import MappingError
from mappings.kantata import KantataInvoice, UndecodableInvoice, decode_invoices

Body = dict[str, Any]


def _body(invoice_id: str = "101") -> Body:
    """A valid one-invoice page with one line of each of the five kinds."""
    return {
        "count": 1,
        "results": [{"key": "invoices", "id": invoice_id}],
        "invoices": {
            invoice_id: {
                "id": invoice_id,
                "created_at": "2024-03-01T09:00:00-08:00",
                "updated_at": "2024-03-02T10:30:00-08:00",
                "invoice_date": "2024-03-01",
                "due_date": "",
                "payment_schedule": 30,
                "draft": False,
                "status": "new",
                "title": "Invoice #00012",
                "user_invoice_number": 12,
                "tax_rate": Decimal("8.875"),
                "balance_in_cents": 0,
                "currency": "USD",
                "currency_symbol": "$",
                "currency_base_unit": 100,
                "workspace_ids": ["55"],
                "recipient_id": None,
                "time_entry_ids": ["7"],
                "expense_ids": ["8"],
                "additional_item_ids": ["9"],
                "fixed_fee_item_ids": ["10"],
                "billing_milestone_ids": ["11"],
            }
        },
        "time_entries": {
            "7": {"id": "7", "time_in_minutes": 90, "rate_in_cents": 2500, "taxable": True}
        },
        "expenses": {"8": {"id": "8", "amount_in_cents": 1999, "date": "2024-02-27"}},
        "additional_items": {"9": {"id": "9", "amount_in_cents": -500, "taxable": True}},
        "fixed_fee_items": {"10": {"id": "10", "amount_in_cents": 100000, "taxable": False}},
        "billing_milestones": {"11": {"id": "11", "amount_in_cents": 0, "title": "Kick-off"}},
        "workspaces": {"55": {"id": "55", "title": "Website"}},
    }


def _invoice(body: Body, invoice_id: str = "101") -> dict[str, Any]:
    record: dict[str, Any] = body["invoices"][invoice_id]
    return record


def _error_of(body: Body, invoice_id: str = "101") -> MappingError:
    """Decode `body` and return the MappingError its only invoice was reported with."""
    (decoded,) = decode_invoices(body)
    assert isinstance(decoded, UndecodableInvoice), decoded
    assert decoded.id == invoice_id
    assert decoded.error.invoice_id == invoice_id
    assert f"invoice {invoice_id}:" in str(decoded.error)
    return decoded.error


def test_valid_page_decodes_every_line_kind() -> None:
    """The base page decodes: five lines in association order with minor-unit amounts."""
    (invoice,) = decode_invoices(_body())
    assert isinstance(invoice, KantataInvoice)
    assert [line.key for line in invoice.lines] == ["te7", "ex8", "ai9", "ff10", "bm11"]
    assert [line.amount_minor for line in invoice.lines] == [3750, 1999, -500, 100000, 0]
    assert [line.taxable for line in invoice.lines] == [True, False, True, False, False]
    assert invoice.tax_rate == Decimal("8.875")
    assert invoice.exponent == 2
    assert invoice.user_invoice_number == "12"
    assert invoice.updated_at == datetime(2024, 3, 2, 18, 30, tzinfo=UTC)


def test_missing_updated_at_is_reported() -> None:
    """An invoice without updated_at is undecodable, naming updated_at."""
    body = _body()
    del _invoice(body)["updated_at"]
    error = _error_of(body)
    assert error.field == "updated_at"
    (decoded,) = decode_invoices(body)
    assert isinstance(decoded, UndecodableInvoice)
    assert decoded.updated_at is None


def test_unknown_currency_is_reported() -> None:
    """Currency "XXX" is not an ISO 4217 code: the error names currency and the code."""
    body = _body()
    _invoice(body)["currency"] = "XXX"
    error = _error_of(body)
    assert error.field == "currency"
    assert "XXX" in error.message


def test_base_unit_contradicting_the_currency_is_reported() -> None:
    """currency_base_unit 100 on a JPY invoice is refused rather than trusted or ignored."""
    body = _body()
    _invoice(body)["currency"] = "JPY"
    error = _error_of(body)
    assert error.field == "currency_base_unit"
    assert "JPY" in error.message


def test_base_unit_that_is_not_a_power_of_ten_is_reported() -> None:
    """currency_base_unit 250 is not a power of ten."""
    body = _body()
    _invoice(body)["currency_base_unit"] = 250
    assert _error_of(body).field == "currency_base_unit"


def test_line_id_absent_from_include_map_is_reported() -> None:
    """An expense id with no side-loaded record names the id list and the id."""
    body = _body()
    _invoice(body)["expense_ids"] = ["8", "999"]
    error = _error_of(body)
    assert error.field == "expense_ids"
    assert "999" in error.message


def test_negative_minutes_are_reported() -> None:
    """A time entry with negative time_in_minutes names the entry and the field."""
    body = _body()
    body["time_entries"]["7"]["time_in_minutes"] = -15
    assert _error_of(body).field == "time_entries[7].time_in_minutes"


def test_fractional_amount_in_cents_is_reported() -> None:
    """amount_in_cents 12.5 (a Decimal from the JSON) is not a whole minor unit."""
    body = _body()
    body["expenses"]["8"]["amount_in_cents"] = Decimal("12.5")
    error = _error_of(body)
    assert error.field == "expenses[8].amount_in_cents"
    assert "12.5" in error.message


def test_non_numeric_amount_in_cents_is_reported() -> None:
    """amount_in_cents "abc" names the line and the field."""
    body = _body()
    body["additional_items"]["9"]["amount_in_cents"] = "abc"
    assert _error_of(body).field == "additional_items[9].amount_in_cents"


@pytest.mark.parametrize("text", ["--5", "²", "1_000", "+5", "5e3", " ", "٣"])
def test_malformed_amount_text_is_reported_not_raised(text: str) -> None:
    """Amount strings that only look numeric are MappingErrors, not crashes of the page."""
    body = _body()
    body["fixed_fee_items"]["10"]["amount_in_cents"] = text
    assert _error_of(body).field == "fixed_fee_items[10].amount_in_cents"


def test_amount_beyond_the_limit_is_reported() -> None:
    """An amount above 10^13 minor units is refused."""
    body = _body()
    body["billing_milestones"]["11"]["amount_in_cents"] = 10**13 + 1
    error = _error_of(body)
    assert error.field == "billing_milestones[11].amount_in_cents"
    assert "10^13" in error.message


def test_amount_at_the_limit_is_accepted() -> None:
    """Exactly 10^13 minor units (and numeric text) still decode."""
    body = _body()
    body["billing_milestones"]["11"]["amount_in_cents"] = str(-(10**13))
    (invoice,) = decode_invoices(body)
    assert isinstance(invoice, KantataInvoice)
    assert invoice.lines[-1].amount_minor == -(10**13)


def test_malformed_invoice_date_is_reported() -> None:
    """invoice_date "2024-13-45" is not a date."""
    body = _body()
    _invoice(body)["invoice_date"] = "2024-13-45"
    error = _error_of(body)
    assert error.field == "invoice_date"
    assert "2024-13-45" in error.message


def test_malformed_line_date_is_reported() -> None:
    """An expense date "27/02/2024" names the expense's date field."""
    body = _body()
    body["expenses"]["8"]["date"] = "27/02/2024"
    assert _error_of(body).field == "expenses[8].date"


def test_malformed_updated_at_is_reported() -> None:
    """updated_at "yesterday" is not a timestamp."""
    body = _body()
    _invoice(body)["updated_at"] = "yesterday"
    assert _error_of(body).field == "updated_at"


def test_tax_rate_above_100_is_reported() -> None:
    """tax_rate 150 is not a percentage between 0 and 100."""
    body = _body()
    _invoice(body)["tax_rate"] = 150
    error = _error_of(body)
    assert error.field == "tax_rate"
    assert "150" in error.message


def test_tax_rate_that_is_not_a_number_is_reported() -> None:
    """tax_rate "ten" is refused."""
    body = _body()
    _invoice(body)["tax_rate"] = "ten"
    assert _error_of(body).field == "tax_rate"


def test_workspace_missing_from_the_map_is_reported() -> None:
    """A workspace id with no included workspace names workspace_ids and the id."""
    body = _body()
    _invoice(body)["workspace_ids"] = ["55", "56"]
    error = _error_of(body)
    assert error.field == "workspace_ids"
    assert "56" in error.message


def test_line_in_another_currency_is_reported() -> None:
    """A line whose currency differs from the invoice's names the line's currency field."""
    body = _body()
    body["expenses"]["8"]["currency"] = "EUR"
    assert _error_of(body).field == "expenses[8].currency"


def test_result_absent_from_the_invoice_map_is_reported() -> None:
    """A result id with no invoice record is reported under that id, field invoices."""
    body = _body()
    body["results"].append({"key": "invoices", "id": "404"})
    decoded = decode_invoices(body)
    assert [d.id for d in decoded] == ["101", "404"]
    assert isinstance(decoded[1], UndecodableInvoice)
    assert decoded[1].error.field == "invoices"


def test_ids_and_numbers_are_decoded_leniently() -> None:
    """Integer ids, numeric-text amounts and whole Decimals decode as their canonical forms."""
    body = _body()
    invoice = _invoice(body)
    invoice["expense_ids"] = [8]
    invoice["workspace_ids"] = [55]
    body["expenses"]["8"]["amount_in_cents"] = "1999"
    body["time_entries"]["7"]["rate_in_cents"] = Decimal("2500.0")
    body["time_entries"]["7"]["time_in_minutes"] = "90"
    (lenient,) = decode_invoices(body)
    (canonical,) = decode_invoices(_body())
    assert isinstance(lenient, KantataInvoice)
    assert isinstance(canonical, KantataInvoice)
    assert lenient.lines == canonical.lines
    assert lenient.workspaces == canonical.workspaces


def _set(path: tuple[str, ...], value: Any) -> Callable[[Body, str], None]:
    """A mutation setting body[...path with "{id}" replaced by the invoice id...] = value."""

    def mutate(body: Body, invoice_id: str) -> None:
        target: Any = body
        keys = [key.replace("{id}", invoice_id) for key in path]
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


def _drop_updated_at(body: Body, invoice_id: str) -> None:
    del body["invoices"][invoice_id]["updated_at"]


BAD_INPUTS: dict[str, Callable[[Body, str], None]] = {
    "missing updated_at": _drop_updated_at,
    "unknown currency": _set(("invoices", "{id}", "currency"), "XXX"),
    "JPY with base unit 100": _set(("invoices", "{id}", "currency"), "JPY"),
    "absent line id": _set(("invoices", "{id}", "expense_ids"), ["e{id}", "missing"]),
    "negative minutes": _set(("time_entries", "t{id}", "time_in_minutes"), -1),
    "fractional amount": _set(("expenses", "e{id}", "amount_in_cents"), Decimal("12.5")),
    "text amount": _set(("expenses", "e{id}", "amount_in_cents"), "abc"),
    "double minus": _set(("expenses", "e{id}", "amount_in_cents"), "--5"),
    "huge amount": _set(("expenses", "e{id}", "amount_in_cents"), 10**13 + 1),
    "malformed date": _set(("invoices", "{id}", "invoice_date"), "2024-02-30"),
    "tax rate 150": _set(("invoices", "{id}", "tax_rate"), 150),
    "missing workspace": _set(("invoices", "{id}", "workspace_ids"), ["nowhere"]),
    "no invoice record": _set(("invoices", "{id}"), None),
}


def _page(ids: list[str]) -> Body:
    """A page of several valid invoices with distinct line ids."""
    page: Body = {
        "results": [],
        "invoices": {},
        "time_entries": {},
        "expenses": {},
        "workspaces": {"55": {"id": "55", "title": "Website"}},
    }
    for number, invoice_id in enumerate(ids, start=1):
        page["results"].append({"key": "invoices", "id": invoice_id})
        page["invoices"][invoice_id] = {
            "id": invoice_id,
            "updated_at": f"2024-03-0{number}T10:00:00-08:00",
            "invoice_date": "2024-03-01",
            "currency": "USD",
            "currency_base_unit": 100,
            "workspace_ids": ["55"],
            "time_entry_ids": [f"t{invoice_id}"],
            "expense_ids": [f"e{invoice_id}"],
        }
        page["time_entries"][f"t{invoice_id}"] = {"time_in_minutes": 60, "rate_in_cents": 1000}
        page["expenses"][f"e{invoice_id}"] = {"amount_in_cents": 100 * number}
    return page


@pytest.mark.parametrize("bad", sorted(BAD_INPUTS))
def test_bad_invoice_leaves_its_page_neighbours_intact(bad: str) -> None:
    """One malformed invoice is reported alone; the others decode as if it were absent."""
    ids = ["3", "1", "2"]
    clean = decode_invoices(_page(ids))
    page = _page(ids)
    BAD_INPUTS[bad](page, "1")
    decoded = decode_invoices(page)
    assert [d.id for d in decoded] == ids
    assert isinstance(decoded[1], UndecodableInvoice)
    assert decoded[1].error.invoice_id == "1"
    assert decoded[0] == clean[0]
    assert decoded[2] == clean[2]
    assert all(isinstance(d, KantataInvoice) for d in (decoded[0], decoded[2]))


def test_undecodable_invoice_keeps_what_the_engine_needs() -> None:
    """An undecodable invoice still carries updated_at, draft, status and a fingerprint."""
    body = _body()
    _invoice(body)["tax_rate"] = 150
    (first,) = decode_invoices(body)
    (again,) = decode_invoices(copy.deepcopy(body))
    assert isinstance(first, UndecodableInvoice)
    assert first.updated_at == datetime(2024, 3, 2, 18, 30, tzinfo=UTC)
    assert first.draft is False
    assert first.status == "new"
    assert first.source_fingerprint == again.source_fingerprint
    _invoice(body)["tax_rate"] = 151
    (changed,) = decode_invoices(body)
    assert changed.source_fingerprint != first.source_fingerprint


# -- lines without workspace_id (Kantata sends it only with a `workspace` include) -------------


def test_a_line_without_workspace_on_a_one_project_invoice_is_on_that_project() -> None:
    """The base page's lines carry no workspace_id, as Kantata's invoice list sends them: on
    an invoice of one project, each line is on that project."""
    (invoice,) = decode_invoices(_body())
    assert isinstance(invoice, KantataInvoice)
    assert {line.workspace_id for line in invoice.lines} == {"55"}


def test_lines_without_workspace_on_a_multi_project_invoice_go_on_all_its_projects() -> None:
    """Several projects and a time entry or expense that does not say which: it is booked on
    one project named after all of them, not on the first; a line naming its project keeps
    it."""
    from mappings.profile import default_profile
    from mappings.to_ledger import to_ledger

    body = _body()
    _invoice(body)["workspace_ids"] = ["55", "56"]
    body["workspaces"]["56"] = {"id": "56", "title": "Mobile app"}
    body["fixed_fee_items"]["10"]["workspace_id"] = "56"
    body["additional_items"]["9"]["workspace_id"] = "55"
    body["billing_milestones"]["11"]["workspace_id"] = "56"
    _invoice(body)["balance_in_cents"] = 105537  # what its lines add up to, tax included
    (invoice,) = decode_invoices(body)
    assert isinstance(invoice, KantataInvoice)
    by_key = {line.key: line.workspace_id for line in invoice.lines}
    assert by_key["te7"] is None and by_key["ex8"] is None
    doc = to_ledger(invoice, default_profile())
    projects = {line.key: line.project for line in doc.lines}
    assert projects["te7"] == projects["ex8"] == "Website + Mobile app"
    assert projects["ff10"] == "Mobile app"
    assert projects["ai9"] == "Website"
