"""The Xero planner: exact totals at Xero's per-line 2 dp tax, credit notes, currencies,
markers and ownership, the `[xero]` profile section."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mappings.errors import MappingError
from mappings.kantata import KantataInvoice, decode_invoices
from mappings.money import tax_amount
from mappings.profile import ProfileError, parse_profile
from mappings.targets.xero import (
    check_totals,
    expected_totals,
    is_ours,
    line_item_ids,
    parse_marker,
    plan_invoice,
    split_tax,
)
from mappings.targets.xero_profile import XeroSettings
from mappings.to_ledger import to_ledger
from tests.strategies import invoice_pages
from tests.xero_support import CONTACT, fake_with_contact, ledger, make_client


def test_split_tax_sums_exactly_and_stays_within_one_unit_of_each_line() -> None:
    amounts = [333, 333, 334, -100, 1]
    rate = Decimal("8.875")
    total = tax_amount(sum(amounts), rate)
    shares = split_tax(amounts, rate, total)
    assert sum(shares) == total
    for amount, share in zip(amounts, shares, strict=True):
        assert abs(share - Decimal(amount) * rate / 100) < Decimal("1.5")


def test_xero_total_equals_kantata_total_where_plain_per_line_rounding_is_a_cent_off() -> None:
    # Ten lines of 0.05 at 10 %: Kantata's tax is round(0.50 * 10 %) = 0.05; Xero rounding
    # each line's 0.005 up would make 0.10.
    doc = ledger([(5, True)] * 10, Decimal(10))
    plan = plan_invoice(doc, XeroSettings())
    assert sum(line.tax_amount for line in plan.lines) == Decimal("0.05")
    client, _f, _t, _c = make_client(fake_with_contact(Decimal(10)))
    [result] = client.create_invoices([plan.payload(CONTACT)])
    assert result.ok, result.errors
    assert result.document is not None
    assert check_totals(plan, result.document) == []
    assert result.document["Total"] == Decimal("0.55")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    amounts=st.lists(
        st.tuples(st.integers(-50_000, 2_000_000), st.booleans()), min_size=1, max_size=12
    ),
    rate=st.sampled_from([Decimal(0), Decimal("8.875"), Decimal("20"), Decimal("7.25")]),
    currency=st.sampled_from(["USD", "EUR", "GBP"]),
)
def test_fake_xero_total_equals_kantata_total_for_random_ledgers(
    amounts: list[tuple[int, bool]], rate: Decimal, currency: str
) -> None:
    doc = ledger(amounts, rate, currency=currency)
    plan = plan_invoice(doc, XeroSettings(), tax_rates={"OUTPUT": rate, "NONE": Decimal(0)})
    client, _f, _t, _c = make_client(fake_with_contact(rate))
    create = client.create_credit_notes if plan.is_credit_note else client.create_invoices
    [result] = create([plan.payload(CONTACT)])
    assert result.ok, result.errors
    assert result.document is not None
    assert check_totals(plan, result.document) == []
    sign = -1 if plan.is_credit_note else 1
    assert Decimal(str(result.document["Total"])) * 100 == sign * doc.total_minor


def test_a_negative_total_becomes_a_credit_note_of_minus_the_total() -> None:
    doc = ledger([(-12_345, True), (2_000, False)], Decimal(20))
    plan = plan_invoice(doc, XeroSettings())
    assert plan.type == "ACCRECCREDIT" and plan.collection == "CreditNotes"
    assert expected_totals(plan)["Total"] == Decimal(-doc.total_minor) / 100
    assert [line.amount for line in plan.lines] == [Decimal("123.45"), Decimal("-20.00")]


def test_jpy_goes_at_two_decimals_and_verifies() -> None:
    doc = ledger([(1001, True), (2503, True)], Decimal(10), currency="JPY", exponent=0)
    plan = plan_invoice(doc, XeroSettings())
    assert plan.lines[0].amount == Decimal("1001.00")
    assert all(line.tax_amount == line.tax_amount.to_integral_value() for line in plan.lines)
    client, _f, _t, _c = make_client(fake_with_contact(Decimal(10)))
    [result] = client.create_invoices([plan.payload(CONTACT)])
    assert result.document is not None and check_totals(plan, result.document) == []
    assert result.document["Total"] == Decimal(doc.total_minor)


def test_three_decimal_currencies_fail_with_a_clear_mapping_error() -> None:
    doc = ledger([(1_000, False)], currency="KWD", exponent=3)
    with pytest.raises(MappingError, match="3 decimals") as info:
        plan_invoice(doc, XeroSettings())
    assert info.value.invoice_id == "77"


def test_a_tax_type_with_another_rate_fails_naming_the_rate() -> None:
    doc = ledger([(1_000, True)], Decimal("8.875"))
    with pytest.raises(MappingError, match=r"8\.875"):
        plan_invoice(doc, XeroSettings(), tax_rates={"OUTPUT": Decimal(15)})
    settings_ = XeroSettings(tax_types={"8.8750": "TAX001"})
    plan = plan_invoice(doc, settings_, tax_rates={"TAX001": Decimal("8.875")})
    assert plan.lines[0].tax_type == "TAX001"


def test_check_totals_names_both_figures() -> None:
    plan = plan_invoice(ledger([(1_000, True)], Decimal(10)), XeroSettings())
    problems = check_totals(
        plan, {"CurrencyCode": "USD", "SubTotal": "10.00", "TotalTax": "1.01", "Total": "11.01"}
    )
    assert problems == [
        "Xero's TotalTax is 1.01 USD but it must be 1.00 USD",
        "Xero's Total is 11.01 USD but it must be 11.00 USD (Kantata's total)",
    ]
    assert check_totals(
        plan, {"CurrencyCode": "EUR", **{k: str(v) for k, v in expected_totals(plan).items()}}
    )[0].startswith("Xero's Currency")


def test_payload_fields_and_markers_prove_ownership() -> None:
    plan = plan_invoice(ledger([(1_000, True), (500, False)], Decimal(10)), XeroSettings())
    body = plan.payload(CONTACT)
    assert body["Reference"] == "KS-77" and body["Status"] == "DRAFT"
    assert body["Date"] == "2026-11-02" and body["DueDate"] == "2026-12-02"
    assert body["LineAmountTypes"] == "Exclusive" and body["CurrencyCode"] == "USD"
    assert [li["AccountCode"] for li in body["LineItems"]] == ["200", "200"]
    assert [li["TaxType"] for li in body["LineItems"]] == ["OUTPUT", "NONE"]
    assert parse_marker(body["LineItems"][0]["Description"]) == ("KS-77", "ex0")
    stored = {
        **body,
        "LineItems": [{**li, "LineItemID": f"id{i}"} for i, li in enumerate(body["LineItems"])],
    }
    assert is_ours(stored, "77")
    assert line_item_ids(stored) == {"ex0": "id0", "ex1": "id1"}
    assert not is_ours(stored, "78")
    hand_edited = {**stored, "LineItems": [*stored["LineItems"], {"Description": "extra"}]}
    assert not is_ours(hand_edited, "77")
    edit = plan.payload(CONTACT, xero_id="inv-1", line_item_ids={"ex0": "id0"})
    assert edit["InvoiceID"] == "inv-1" and edit["LineItems"][0]["LineItemID"] == "id0"
    assert "LineItemID" not in edit["LineItems"][1]


def test_profile_xero_section() -> None:
    xero = XeroSettings.from_profile(
        parse_profile(
            '[xero]\nsales_account = "201"\nkeep_as_draft = true\n'
            '[xero.accounts]\nexpense = "260"\n[xero.tax_types]\n"8.875" = "TAX001"\n'
        )
    )
    assert xero.account_for("expense") == "260"
    assert xero.account_for("time_entry") == "201"
    assert xero.tax_type_for(True, Decimal("8.8750")) == "TAX001"
    assert xero.tax_type_for(False, Decimal("8.875")) == "NONE"
    assert xero.keep_as_draft
    assert XeroSettings.from_profile(parse_profile("")) == XeroSettings()
    with pytest.raises(ProfileError, match=r"key xero\.accounts: unknown line kind"):
        XeroSettings.from_profile(parse_profile('[xero.accounts]\nhours = "200"\n'))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=invoice_pages(), detail=st.sampled_from(["itemized", "per_kind", "per_task"]))
def test_kantata_page_to_fake_xero_lands_on_the_kantata_total(
    body: dict[str, object], detail: str
) -> None:
    """The whole way: a generated Kantata page -> ledger -> Xero plan -> the fake Xero's own
    per-line arithmetic, for every line detail; what Xero cannot hold fails by name."""
    (invoice,) = decode_invoices(body)
    assert isinstance(invoice, KantataInvoice)
    doc = to_ledger(invoice, parse_profile(f'[lines]\ndetail = "{detail}"\n'))
    if doc.exponent > 2 or not doc.lines:
        with pytest.raises(MappingError, match=r"decimals|no billable line"):
            plan_invoice(doc, XeroSettings())
        return
    plan = plan_invoice(doc, XeroSettings())
    client, _f, _t, _c = make_client(fake_with_contact(Decimal(15)))
    create = client.create_credit_notes if plan.is_credit_note else client.create_invoices
    [result] = create([plan.payload(CONTACT)])
    assert result.document is not None, result.errors
    assert check_totals(plan, result.document) == []
    total = Decimal(str(result.document["Total"])).scaleb(doc.exponent)
    assert (-total if plan.is_credit_note else total) == doc.total_minor
