"""Contract tests: the mapping against recorded Kantata responses and Noko's documented bodies
(tests/fixtures/, provenance in tests/fixtures/README.md)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mappings.kantata import KantataInvoice, UndecodableInvoice, decode_invoices, page_meta
from mappings.profile import default_profile, parse_profile
from mappings.targets.noko import check_totals, parse_marker, plan_invoice
from mappings.to_ledger import to_ledger

FIXTURES = Path(__file__).parent / "fixtures"
PACIFIC_DAYLIGHT = timedelta(hours=-7)


def _load(relative: str) -> Any:
    """A fixture parsed with every JSON number that has a fraction as Decimal."""
    return json.loads((FIXTURES / relative).read_text("utf-8"), parse_float=Decimal)


RECORDED = _load("kantata/mavenlink_ruby/extracted/invoices.json")
PAID = _load("kantata/sample_mavenlink_connector/invoice_paid_fixture.json")
EXTERNAL_REFERENCE = _load(
    "kantata/mavenlink_gem/external_reference_create_or_update_response.json"
)
NOKO_INVOICE = _load("noko/freckle-apidocs/noko-invoice.json")
NOKO_EXPENSE = _load("noko/freckle-apidocs/noko-expense.json")
NOKO_CREATE_FIELDS = _load("noko/freckle-apidocs/noko-invoice-create-fields.json")
NOKO_CUSTOMIZATION = _load("noko/freckle-apidocs/noko-invoice-customization.json")

RESPONSES = [interaction["response_body"] for interaction in RECORDED]
RESPONSE_IDS = [interaction["uri"].split("&", 1)[1] for interaction in RECORDED]


def _decoded(body: dict[str, Any]) -> list[KantataInvoice]:
    invoices = decode_invoices(body)
    assert all(isinstance(invoice, KantataInvoice) for invoice in invoices), invoices
    return [invoice for invoice in invoices if isinstance(invoice, KantataInvoice)]


def _recorded_invoice(invoice_id: str) -> KantataInvoice:
    """The invoice as decoded from the first recorded page holding it."""
    for body in RESPONSES:
        for invoice in _decoded(body):
            if invoice.id == invoice_id:
                return invoice
    raise AssertionError(f"invoice {invoice_id} is not recorded")


def test_every_recorded_interaction_is_an_invoice_page() -> None:
    """The fixture holds the five recorded 200 responses of GET /invoices."""
    assert len(RECORDED) == 5
    assert {interaction["status"] for interaction in RECORDED} == {200}
    assert all("/invoices.json?" in interaction["uri"] for interaction in RECORDED)


@pytest.mark.parametrize("body", RESPONSES, ids=RESPONSE_IDS)
def test_recorded_pages_decode_in_results_order_with_string_ids(body: dict[str, Any]) -> None:
    """Every recorded invoice decodes; ids are strings in `results` order, count matches."""
    invoices = _decoded(body)
    assert [invoice.id for invoice in invoices] == [result["id"] for result in body["results"]]
    assert all(type(invoice.id) is str for invoice in invoices)
    assert len(invoices) == body["count"]
    for invoice in invoices:
        assert all(type(line.id) is str for line in invoice.lines)
        assert all(type(ws.id) is str for ws in invoice.workspaces)


@pytest.mark.parametrize("body", RESPONSES, ids=RESPONSE_IDS)
def test_recorded_totals_equal_recorded_balance(body: dict[str, Any]) -> None:
    """The ledger total computed from the recorded lines equals Kantata's balance_in_cents."""
    for invoice in _decoded(body):
        doc = to_ledger(invoice, default_profile())
        assert doc.total_minor == invoice.balance_in_cents
        assert doc.total_minor == body["invoices"][invoice.id]["balance_in_cents"]
        assert not doc.balance_mismatch
    assert {invoice.balance_in_cents for invoice in _decoded(body)} <= {400, 32500}


@pytest.mark.parametrize("body", RESPONSES, ids=RESPONSE_IDS)
def test_recorded_timestamps_keep_their_offset(body: dict[str, Any]) -> None:
    """Timestamps decode as aware datetimes with the recorded -07:00 offset."""
    for invoice in _decoded(body):
        assert invoice.updated_at.utcoffset() == PACIFIC_DAYLIGHT
        assert invoice.created_at is not None
        assert invoice.created_at.utcoffset() == PACIFIC_DAYLIGHT
        recorded = body["invoices"][invoice.id]["updated_at"]
        assert invoice.updated_at.isoformat() == recorded


def test_recorded_time_and_expense_lines() -> None:
    """Invoice 280315: 0 + round(300 min x 25.00/h) + 200.00 expense = 325.00, none taxable."""
    invoice = _recorded_invoice("280315")
    assert [(line.key, line.amount_minor) for line in invoice.lines] == [
        ("te8571785", 0),
        ("te8571775", 12500),
        ("ex8509845", 20000),
    ]
    free, billed, expense = invoice.lines
    assert (free.minutes, free.rate_minor) == (60, 0)
    assert (billed.minutes, billed.rate_minor) == (300, 2500)
    assert billed.date == date(2013, 7, 1)
    assert billed.description == "Additional Notes Example"
    assert billed.story_id == "26133885"
    assert expense.category == "Random Category Y"
    assert expense.date == date(2013, 7, 31)
    assert not any(line.taxable for line in invoice.lines)
    assert invoice.tax_rate == 0
    assert invoice.currency == "USD"
    assert invoice.exponent == 2
    assert invoice.updated_at == datetime(2013, 7, 31, 17, 45, 24, tzinfo=UTC)


def test_recorded_additional_item_without_taxable_is_not_taxable() -> None:
    """Invoice 280335: the 2013 additional item has no taxable field and counts as not taxable."""
    invoice = _recorded_invoice("280335")
    (item,) = invoice.lines
    assert (item.kind, item.id, item.amount_minor, item.taxable) == (
        "additional_item",
        "8572395",
        400,
        False,
    )
    assert invoice.status == "accepted payment"
    assert invoice.workspaces[0].title == "Random Workspace MG"


def test_recorded_ledger_document() -> None:
    """Invoice 280315 maps to a document: due date from net 30, workspace as customer."""
    doc = to_ledger(_recorded_invoice("280315"), default_profile())
    assert doc.reference == "KS-280315"
    assert doc.title == "Invoice #00002"
    assert doc.invoice_date == date(2013, 7, 31)
    assert doc.due_date == date(2013, 8, 30)  # the recorded due_date
    assert doc.customer_name == "Random New Workspace"
    assert doc.projects == ("Random New Workspace",)
    assert (doc.subtotal_minor, doc.taxable_subtotal_minor, doc.tax_minor) == (32500, 0, 0)
    assert doc.tax is None
    assert [line.key for line in doc.lines] == ["te8571775", "ex8509845"]


def test_recorded_non_billable_time_is_no_line_even_with_zero_amounts_kept() -> None:
    """money.md: the recorded non-billable entry is not billed, so it is no line even with
    include_zero_amount (which keeps billable lines of amount zero)."""
    profile = parse_profile("[lines]\ninclude_zero_amount = true\n")
    invoice = _recorded_invoice("280315")
    assert [line.billable for line in invoice.lines if line.kind == "time_entry"] == [False, True]
    doc = to_ledger(invoice, profile)
    assert [line.amount_minor for line in doc.lines] == [12500, 20000]
    assert doc.total_minor == 32500 == invoice.balance_in_cents


def test_same_recorded_invoice_has_one_fingerprint() -> None:
    """Invoice 280315 recorded on three pages gives the same source and ledger fingerprints."""
    copies = [i for body in RESPONSES for i in _decoded(body) if i.id == "280315"]
    assert len(copies) == 3
    assert len({invoice.source_fingerprint for invoice in copies}) == 1
    profile = default_profile()
    assert len({to_ledger(invoice, profile).fingerprint() for invoice in copies}) == 1


def test_recorded_plan_lands_on_the_kantata_total() -> None:
    """The Noko plan of invoice 280315 prices each line exactly and expects 325.00."""
    plan = plan_invoice(to_ledger(_recorded_invoice("280315"), default_profile()))
    assert [expense.price for expense in plan.expenses] == [Decimal("125.00"), Decimal("200.00")]
    assert plan.expected_total == Decimal("325.00")
    assert plan.taxes == ()
    assert [parse_marker(e.description) for e in plan.expenses] == [
        ("KS-280315", "te8571775"),
        ("KS-280315", "ex8509845"),
    ]


def test_paid_fixture_without_line_includes_is_undecodable() -> None:
    """The 2020 paid page has no line-item includes: reported, naming time_entry_ids."""
    (decoded,) = decode_invoices(PAID)
    assert isinstance(decoded, UndecodableInvoice)
    assert decoded.id == "4585"
    assert decoded.error.invoice_id == "4585"
    assert decoded.error.field == "time_entry_ids"
    assert decoded.updated_at == datetime(2020, 7, 16, 17, 5, 2, tzinfo=timezone(PACIFIC_DAYLIGHT))
    assert decoded.updated_at is not None
    assert decoded.updated_at.utcoffset() == PACIFIC_DAYLIGHT
    assert decoded.draft is False
    assert decoded.status == "accepted payment"
    assert page_meta(PAID) == (1, 1)


def test_paid_fixture_balance_is_its_lines_plus_ten_percent_tax() -> None:
    """With one taxable 1,345.00 line included, the 10.0 % invoice totals its balance 1,479.50."""
    body = copy.deepcopy(PAID)
    body["invoices"]["4585"]["additional_item_ids"] = ["1"]
    body["additional_items"] = {"1": {"id": "1", "amount_in_cents": 134500, "taxable": True}}
    (invoice,) = _decoded(body)
    assert invoice.tax_rate == Decimal(10)
    assert invoice.user_invoice_number == "9"
    doc = to_ledger(invoice, default_profile())
    assert (doc.subtotal_minor, doc.tax_minor, doc.total_minor) == (134500, 13450, 147950)
    assert doc.total_minor == PAID["invoices"]["4585"]["balance_in_cents"]
    assert doc.tax is not None
    assert doc.tax.name == "Tax 10%"
    plan = plan_invoice(doc)
    assert plan.taxes == (("Tax 10%", Decimal("10.00")),)
    assert plan.expected_total == Decimal("1479.50")
    assert plan.expected_tax_total == Decimal("134.50")


def test_recorded_external_reference_is_decoded() -> None:
    """The recorded create_or_update reference, side-loaded on an invoice, is found by service."""
    body = copy.deepcopy(RESPONSES[2])
    body["invoices"]["280315"]["external_reference_ids"] = ["7"]
    body["external_references"] = EXTERNAL_REFERENCE["external_references"]
    (invoice,) = _decoded(body)
    reference = invoice.reference_for("Netsuite")
    assert reference is not None
    assert (reference.id, reference.service_model, reference.service_model_ref) == (
        "7",
        "TimeBill",
        "1",
    )
    assert invoice.reference_for("kantata-sync") is None
    assert invoice.source_fingerprint == _recorded_invoice("280315").source_fingerprint


def _plan_expecting(total: Decimal, tax_total: Decimal) -> Any:
    """A real plan (recorded invoice 280335) with its expected totals replaced."""
    plan = plan_invoice(to_ledger(_recorded_invoice("280335"), default_profile()))
    return replace(plan, expected_total=total, expected_tax_total=tax_total)


def test_noko_invoice_matching_the_plan_passes_the_check() -> None:
    """Noko's documented invoice (total 1, tax 0) agrees with a plan expecting 1.00 and 0.00."""
    assert NOKO_INVOICE["total_amount"] == 1
    plan = _plan_expecting(Decimal("1.00"), Decimal("0.00"))
    assert check_totals(plan, NOKO_INVOICE) == []


def test_noko_invoice_differing_from_the_plan_fails_the_check() -> None:
    """The real plan of invoice 280335 (4.00) does not match Noko's total of 1."""
    plan = plan_invoice(to_ledger(_recorded_invoice("280335"), default_profile()))
    problems = check_totals(plan, NOKO_INVOICE)
    assert len(problems) == 1
    assert "total_amount" in problems[0]
    assert "4.00" in problems[0]


def test_noko_invoice_with_unexpected_tax_fails_the_check() -> None:
    """A plan expecting tax that Noko did not charge reports tax_total_amount."""
    problems = check_totals(_plan_expecting(Decimal("1.00"), Decimal("0.15")), NOKO_INVOICE)
    assert len(problems) == 1
    assert "tax_total_amount" in problems[0]


def test_noko_expense_invoice_total_is_checked_to_the_cent() -> None:
    """The invoice summary inside Noko's expense (189.33) matches 189.33, not 189.34."""
    summary = NOKO_EXPENSE["invoice"]
    assert summary["total_amount"] == Decimal("189.33")
    assert check_totals(_plan_expecting(Decimal("189.33"), Decimal("0.00")), summary) == []
    assert check_totals(_plan_expecting(Decimal("189.34"), Decimal("0.00")), summary) != []


def test_noko_expense_price_is_exact() -> None:
    """Noko's expense price 14.55 reads as exactly 1455 cents."""
    assert NOKO_EXPENSE["price"] == Decimal("14.55")
    assert NOKO_EXPENSE["price"].scaleb(2) == 1455


def test_plan_uses_only_documented_invoice_fields() -> None:
    """The create body's fields, customization keys and tax shape are all in Noko's docs."""
    body = copy.deepcopy(RESPONSES[2])
    body["invoices"]["280315"]["tax_rate"] = Decimal("7.5")
    body["invoices"]["280315"]["balance_in_cents"] = 34000  # 325.00 + 7.5 % of 200.00
    body["expenses"]["8509845"]["taxable"] = True
    (invoice,) = _decoded(body)
    plan = plan_invoice(to_ledger(invoice, default_profile()))
    create = plan.create_body([101, 102])
    documented = set(NOKO_CREATE_FIELDS) | {"customization"}  # noko.md: customization on POST
    assert set(create) <= documented, set(create) - documented
    assert set(create["customization"]) <= set(NOKO_CUSTOMIZATION)
    assert set(create["customization"]) <= set(NOKO_INVOICE["customization"])
    (tax,) = create["taxes"]
    assert set(tax) == set(NOKO_CREATE_FIELDS["taxes"][0])
    assert tax["percentage"] == Decimal("7.50")
    assert create["expense_ids"] == [101, 102]


# The fingerprints the release before the issuer/recipient split computed for the recorded
# invoices with the built-in profile (commit cb6711a): a store written by it must still match.
FIRST_RELEASE_FINGERPRINTS = {
    "280315": "bdf19f7c76f8859da59e56940478cbafd02f8bb667358281dfcd637f58e4acfe",
    "280335": "ca85b1ba6f175cbe5793a5a9bca6054966b550aae0233ad73fed50662f81b4ec",
}


def test_stored_fingerprints_still_match_after_the_issuer_recipient_split() -> None:
    """Moving the customer to `recipient_details` and adding the issuer changes the Noko
    payload, not the ledger document's fingerprint: nothing synced is pushed again."""
    profile = default_profile()
    for invoice_id, stored in FIRST_RELEASE_FINGERPRINTS.items():
        doc = to_ledger(_recorded_invoice(invoice_id), profile)
        assert doc.fingerprint() == stored
        plan = plan_invoice(doc)
        assert plan.fields["company_name"] == ""
        assert plan.fields["recipient_details"].startswith(doc.customer_name)
    issuer = parse_profile('[noko]\ncompany_name = "Northwind Consulting Ltd"\n')
    doc = to_ledger(_recorded_invoice("280315"), issuer)
    assert doc.fingerprint() != FIRST_RELEASE_FINGERPRINTS["280315"]  # a real change of issuer
    assert plan_invoice(doc).fields["company_name"] == "Northwind Consulting Ltd"
