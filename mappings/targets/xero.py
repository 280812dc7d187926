"""Ledger document -> the Xero sales invoice (or credit note) that realises it, and the check
of Xero's answer.

Exactness. Xero keeps every amount at 2 decimals and computes tax per line, rounded to 2 dp,
then sums (xero.md §4); a line's `TaxAmount` may override its computed tax. So each line is sent
with Quantity 1, its exact `LineAmount` (= `UnitAmount`) and an explicit `TaxAmount`; the line
taxes are the Kantata tax split over the taxable lines: each line's own rounded tax, the few
minor units left over (at most half a unit per line) given to the lines whose rounding lost the
most (largest remainder). The line taxes therefore sum to the Kantata tax exactly, and each is
within one minor unit of what Xero would compute itself. `check_totals` compares Xero's answer
(`SubTotal`, `TotalTax`, `Total`, `CurrencyCode`) to the plan to the minor unit: if Xero ever
ignored an override, the invoice fails that check instead of standing with a wrong total.

A Kantata invoice with a negative total becomes an `ACCRECCREDIT` credit note whose lines are
the Kantata lines negated, so its `Total` is minus the Kantata total.

Currencies with 3 or 4 decimals cannot be held at Xero's 2 dp and fail with a `MappingError`;
0-decimal ones (JPY) are sent as whole amounts at 2 dp (`1234.00`).

Ownership. `Reference` is `KS-<kantata id>` and every line description ends with the marker
`[KS-<kantata id>/<line key>]`: only an invoice with our reference whose every line carries our
marker (and that Xero lists under `createdByMyApp=true`) is ever adopted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from mappings.errors import MappingError
from mappings.ledger import LedgerDocument
from mappings.money import format_money, round_half_up
from mappings.targets.xero_profile import XeroSettings

XERO_EXPONENT = 2
"""Xero does all money at 2 decimals (xero.md §4, money.md)."""
DESCRIPTION_LIMIT = 4000
REFERENCE_PREFIX = "KS-"
INVOICE = "ACCREC"
CREDIT_NOTE = "ACCRECCREDIT"
_MARKER = re.compile(r"\[(?P<reference>[^\[\]/]+)/(?P<key>[^\[\]/]+)\]\s*$")
_CENT = Decimal("0.01")


def xero_reference(kantata_id: str) -> str:
    """The Xero `Reference` of a Kantata invoice: the natural key of the pair."""
    return f"{REFERENCE_PREFIX}{kantata_id}"


def marker(reference: str, line_key: str) -> str:
    return f"[{reference}/{line_key}]"


def parse_marker(description: str) -> tuple[str, str] | None:
    """(reference, line key) of a line description written by `plan_invoice`, else None."""
    match = _MARKER.search(description or "")
    if match is None:
        return None
    return match.group("reference"), match.group("key")


@dataclass(frozen=True)
class XeroLinePlan:
    key: str
    description: str
    amount: Decimal
    """LineAmount (= UnitAmount, Quantity 1) in major units at 2 dp, signed as sent."""
    tax_amount: Decimal
    account_code: str
    tax_type: str

    def payload(self, line_item_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Description": self.description,
            "Quantity": Decimal("1.0000"),
            "UnitAmount": self.amount,
            "LineAmount": self.amount,
            "AccountCode": self.account_code,
            "TaxType": self.tax_type,
            "TaxAmount": self.tax_amount,
        }
        if line_item_id:
            body["LineItemID"] = line_item_id
        return body


@dataclass(frozen=True)
class XeroPlan:
    kantata_id: str
    reference: str
    type: str
    """`ACCREC` (invoice) or `ACCRECCREDIT` (credit note)."""
    currency: str
    date: str
    due_date: str | None
    lines: tuple[XeroLinePlan, ...]
    subtotal_cents: int
    tax_cents: int
    total_cents: int
    """Xero's expected figures in cents (always >= 0 for the total)."""
    kantata_total_minor: int
    kantata_exponent: int
    keep_as_draft: bool

    @property
    def is_credit_note(self) -> bool:
        return self.type == CREDIT_NOTE

    @property
    def collection(self) -> str:
        """The endpoint and body key: `Invoices` or `CreditNotes`."""
        return "CreditNotes" if self.is_credit_note else "Invoices"

    @property
    def id_field(self) -> str:
        return "CreditNoteID" if self.is_credit_note else "InvoiceID"

    def payload(
        self,
        contact_id: str,
        *,
        xero_id: str | None = None,
        line_item_ids: Mapping[str, str] | None = None,
        status: str = "DRAFT",
    ) -> dict[str, Any]:
        """The element of a `{"Invoices": [...]}` (or `CreditNotes`) batch for this plan.

        `xero_id` and `line_item_ids` (line key -> LineItemID) make it an edit in place that
        keeps Xero's ids; lines without an id are added, lines left out are deleted by Xero.
        """
        ids = line_item_ids or {}
        body: dict[str, Any] = {
            "Type": self.type,
            "Contact": {"ContactID": contact_id},
            "Date": self.date,
            "Reference": self.reference,
            "CurrencyCode": self.currency,
            "LineAmountTypes": "Exclusive",
            "Status": status,
            "LineItems": [line.payload(ids.get(line.key)) for line in self.lines],
        }
        if self.due_date is not None:
            body["DueDate"] = self.due_date
        if xero_id:
            body[self.id_field] = xero_id
        return body


def to_cents(minor: int, exponent: int, *, invoice_id: str = "", field: str = "currency") -> int:
    """Kantata minor units -> Xero cents; `MappingError` when Xero cannot hold them exactly."""
    if exponent > XERO_EXPONENT:
        raise MappingError(
            invoice_id,
            field,
            f"the currency has {exponent} decimals; Xero keeps amounts at {XERO_EXPONENT}, "
            "so this invoice cannot be held there exactly",
        )
    factor: int = 10 ** (XERO_EXPONENT - exponent)
    return minor * factor


def _major(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-XERO_EXPONENT).quantize(_CENT)


def split_tax(amounts: Sequence[int], rate: Decimal, total_tax: int) -> list[int]:
    """Per-line taxes (same minor units as `amounts`) summing to `total_tax` exactly: each
    line's own half-up rounded tax, the remainder handed out one unit at a time to the lines
    whose rounding moved them furthest in the other direction (ties: the earlier line)."""
    exact = [Decimal(a) * rate / Decimal(100) for a in amounts]
    taxes: list[int] = [round_half_up(value) for value in exact]
    left = total_tax - sum(taxes)
    if not amounts:
        if left:
            raise ValueError("tax without a taxable line")
        return taxes
    step = 1 if left > 0 else -1
    # How far rounding moved each line away from the direction we must go.
    order = sorted(range(len(amounts)), key=lambda i: (-(exact[i] - taxes[i]) * step, i))
    i = 0
    while left:
        taxes[order[i % len(order)]] += step
        left -= step
        i += 1
    return taxes


def plan_invoice(
    doc: LedgerDocument,
    settings: XeroSettings,
    *,
    tax_rates: Mapping[str, Decimal] | None = None,
) -> XeroPlan:
    """The Xero document that shows exactly this ledger document.

    `tax_rates` (tax type -> percent, from `GET /TaxRates`) is optional: when given, a taxable
    line's tax type must carry the Kantata rate, else the invoice fails naming the rate.
    """
    exp = doc.exponent
    if exp > XERO_EXPONENT:
        to_cents(0, exp, invoice_id=doc.kantata_id)
    reference = xero_reference(doc.kantata_id)
    sign = -1 if doc.total_minor < 0 else 1
    rate = doc.tax.rate if doc.tax is not None and doc.tax_minor else None

    taxable_index = [i for i, line in enumerate(doc.lines) if line.taxable and rate is not None]
    line_taxes = [0] * len(doc.lines)
    if rate is not None:
        shares = split_tax([doc.lines[i].amount_minor for i in taxable_index], rate, doc.tax_minor)
        for i, share in zip(taxable_index, shares, strict=True):
            line_taxes[i] = share
    elif doc.tax_minor:
        raise MappingError(doc.kantata_id, "tax", "a tax amount without a tax rate")
    if rate is not None and not taxable_index:
        raise MappingError(doc.kantata_id, "tax", "a tax amount but no taxable line")

    lines: list[XeroLinePlan] = []
    for i, line in enumerate(doc.lines):
        taxed = i in taxable_index
        tax_type = settings.tax_type_for(taxed, rate)
        if taxed and tax_rates is not None and rate is not None:
            known = tax_rates.get(tax_type)
            if known is None or known.normalize() != rate.normalize():
                shown = "unknown" if known is None else f"{known.normalize()}%"
                raise MappingError(
                    doc.kantata_id,
                    "tax_rate",
                    f"Xero tax type {tax_type} is {shown}, the invoice's rate is "
                    f"{rate.normalize()}%: map the rate to a tax type in [xero.tax_types]",
                )
        lines.append(
            XeroLinePlan(
                key=line.key,
                description=_marked(line.description, reference, line.key),
                amount=_major(sign * to_cents(line.amount_minor, exp)),
                tax_amount=_major(sign * to_cents(line_taxes[i], exp)),
                account_code=settings.account_for(line.kind),
                tax_type=tax_type,
            )
        )
    if not lines:
        raise MappingError(doc.kantata_id, "lines", "no billable line: Xero needs at least one")
    due = doc.due_date.isoformat() if doc.due_date is not None else None
    return XeroPlan(
        kantata_id=doc.kantata_id,
        reference=reference,
        type=CREDIT_NOTE if sign < 0 else INVOICE,
        currency=doc.currency,
        date=doc.invoice_date.isoformat(),
        due_date=due,
        lines=tuple(lines),
        subtotal_cents=sign * to_cents(doc.subtotal_minor, exp),
        tax_cents=sign * to_cents(doc.tax_minor, exp),
        total_cents=sign * to_cents(doc.total_minor, exp),
        kantata_total_minor=doc.total_minor,
        kantata_exponent=exp,
        keep_as_draft=settings.keep_as_draft,
    )


def _marked(text: str, reference: str, line_key: str) -> str:
    suffix = " " + marker(reference, line_key)
    plain = (text or "").replace("[", "(").replace("]", ")")
    return plain[: max(DESCRIPTION_LIMIT - len(suffix), 0)] + suffix


def expected_totals(plan: XeroPlan) -> dict[str, Decimal]:
    """What Xero must answer for this plan, in major units at 2 dp."""
    return {
        "SubTotal": _major(plan.subtotal_cents),
        "TotalTax": _major(plan.tax_cents),
        "Total": _major(plan.total_cents),
    }


def _cents(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        scaled = Decimal(str(value)).scaleb(XERO_EXPONENT)
    except (InvalidOperation, ValueError):
        return None
    if not scaled.is_finite() or scaled != scaled.to_integral_value():
        return None
    return int(scaled)


def check_totals(plan: XeroPlan, answer: Mapping[str, Any]) -> list[str]:
    """Differences between Xero's document and the plan, each naming both figures; empty when
    `SubTotal`, `TotalTax`, `Total` and `CurrencyCode` all agree to the minor unit."""
    problems: list[str] = []
    if answer.get("CurrencyCode") != plan.currency:
        problems.append(
            f"Xero's CurrencyCode is {answer.get('CurrencyCode')!r} but Kantata's currency "
            f"is {plan.currency}"
        )
    if answer.get("Type") not in (None, plan.type):
        problems.append(f"Xero's Type is {answer.get('Type')!r}, expected {plan.type}")
    wanted = {
        "SubTotal": plan.subtotal_cents,
        "TotalTax": plan.tax_cents,
        "Total": plan.total_cents,
    }
    for field, cents in wanted.items():
        got = _cents(answer.get(field))
        if got != cents:
            shown = (
                format_money(got, XERO_EXPONENT, plan.currency)
                if got is not None
                else repr(answer.get(field))
            )
            problems.append(
                f"Xero's {field} is {shown} but it must be "
                f"{format_money(cents, XERO_EXPONENT, plan.currency)}"
                + (" (Kantata's total)" if field == "Total" else "")
            )
    return problems


def is_ours(document: Mapping[str, Any], kantata_id: str) -> bool:
    """Whether a Xero invoice or credit note is one the connector made for this Kantata invoice:
    our `Reference` and our marker on every line (with at least one line)."""
    reference = xero_reference(kantata_id)
    if document.get("Reference") != reference:
        return False
    items = document.get("LineItems")
    if not isinstance(items, list) or not items:
        return False
    for item in items:
        parsed = parse_marker(item.get("Description", "") if isinstance(item, dict) else "")
        if parsed is None or parsed[0] != reference:
            return False
    return True


def line_item_ids(document: Mapping[str, Any]) -> dict[str, str]:
    """Line key -> LineItemID of a Xero document whose lines carry our markers."""
    out: dict[str, str] = {}
    for item in document.get("LineItems") or ():
        if not isinstance(item, dict):
            continue
        parsed = parse_marker(item.get("Description", ""))
        if parsed is not None and item.get("LineItemID"):
            out[parsed[1]] = str(item["LineItemID"])
    return out


def contact_payload(client_id: str | None, name: str) -> dict[str, Any]:
    """A contact to create for a Kantata client: `ContactNumber` = the client id (<= 50)."""
    body: dict[str, Any] = {"Name": name[:255] or "Unknown customer"}
    if client_id:
        body["ContactNumber"] = client_id[:50]
    return body
