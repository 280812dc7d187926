"""Ledger document -> the Noko requests that realise it, and the check of Noko's answer.

Every line becomes a Noko expense at its exact amount, so Noko's `total_amount` equals the
Kantata total to the minor unit. The tax becomes a Noko tax when Noko can hold its rate (two
decimals) and reproduces the amount; otherwise it is an exact, tax-free line of its own.

Each expense description ends with a marker `[<reference>/<line key>]`: the natural key that lets
a restarted sync find expenses it created before a crash instead of creating them again. The
invoice's footer ends with the owner marker `[<reference>/invoice]`: the proof that a Noko invoice
carrying our reference was made by the connector, not by a person (Noko generates references for
invoices created without one "based on previous invoices", so a bookkeeper's invoice can carry
the next `KS-<id>`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from mappings.ledger import LedgerDocument
from mappings.money import format_money, tax_amount, to_major, to_minor

DESCRIPTION_LIMIT = 240
TAX_LINE_KEY = "tax"
OWNER_KEY = "invoice"
"""Line key of the owner marker in the invoice footer; no line key of a ledger is this word."""
# The reference may itself contain "/" (e.g. "INV/{id}"); line keys never do, so the last "/"
# of the marker separates the two.
_MARKER = re.compile(r"\[(?P<reference>[^\[\]]+)/(?P<key>[^\[\]/]+)\]\s*$")


@dataclass(frozen=True)
class NokoExpensePlan:
    line_key: str
    project: str
    date: str
    price: Decimal
    taxable: bool
    description: str


@dataclass(frozen=True)
class NokoEntryPlan:
    """A time line that goes to Noko as a time entry billed at the plan's hourly rate."""

    line_key: str
    project: str
    date: str
    minutes: int
    description: str


@dataclass(frozen=True)
class NokoInvoicePlan:
    kantata_id: str
    reference: str
    fields: dict[str, Any]
    """The `POST /invoices` body without `expense_ids` (added once the expenses exist)."""
    expenses: tuple[NokoExpensePlan, ...]
    taxes: tuple[tuple[str, Decimal], ...]
    expected_total: Decimal
    expected_tax_total: Decimal
    exponent: int
    currency: str
    entries: tuple[NokoEntryPlan, ...] = ()
    billing_increment: int | None = None
    """Minutes: the billing increment of projects created for this plan (time entries mode);
    None leaves it to the account's default."""

    def create_body(
        self, expense_ids: list[int], entry_ids: list[int] | None = None
    ) -> dict[str, Any]:
        body = dict(self.fields)
        body["expense_ids"] = list(expense_ids)
        if entry_ids:
            body["entry_ids"] = list(entry_ids)
        body["taxes"] = [{"name": name, "percentage": pct} for name, pct in self.taxes]
        return body


def marker(reference: str, line_key: str) -> str:
    return f"[{reference}/{line_key}]"


def parse_marker(description: str) -> tuple[str, str] | None:
    """(reference, line key) of a description written by `plan_invoice`, else None."""
    match = _MARKER.search(description or "")
    if match is None:
        return None
    return match.group("reference"), match.group("key")


def owner_marker(reference: str) -> str:
    """What the footer of every Noko invoice the connector creates for `reference` contains."""
    return marker(reference, OWNER_KEY)


def is_ours(invoice: Mapping[str, Any], reference: str) -> bool:
    """Whether a Noko invoice (as listed or read) carries `reference` and the connector's owner
    marker for it: a reference alone proves nothing."""
    return invoice.get("reference") == reference and owner_marker(reference) in str(
        invoice.get("footer") or ""
    )


def marker_prefix(reference: str) -> str:
    """Text every marked description of one invoice contains (for Noko's `description` filter)."""
    return f"[{reference}/"


def _marked(text: str, reference: str, line_key: str) -> str:
    """`text` (brackets made parentheses, cut to fit) followed by the line's marker."""
    suffix = " " + marker(reference, line_key)
    plain = text.replace("[", "(").replace("]", ")")
    return plain[: max(DESCRIPTION_LIMIT - len(suffix), 0)] + suffix


HASH = "#"
HASH_STANDIN = "\uff03"  # FULLWIDTH NUMBER SIGN: reads as "#", is not a hashtag


def _no_hashtags(text: str) -> str:
    """Noko parses "tags or hashtags" out of a time entry's description (its docs), and the
    description it gives back then differs from what was sent (its own example: "noko" with the
    tag "#noko"). A time entry must come back exactly as planned, so its text carries no "#"."""
    return text.replace(HASH, HASH_STANDIN)


def same_entry_text(noko: str, planned: str) -> bool:
    """Whether a time entry's description as Noko gives it back is the planned one: equal but
    for "#" signs (Noko's hashtag parsing may drop them; entries made before the stand-in was
    used carry "#" in place of it)."""

    def key(text: str) -> str:
        return text.replace(HASH, "").replace(HASH_STANDIN, "")

    return noko == planned or key(noko) == key(planned)


def _noko_can_hold(rate: Decimal) -> bool:
    try:
        return rate == rate.quantize(Decimal("0.01"))
    except InvalidOperation:
        return False


def plan_invoice(doc: LedgerDocument) -> NokoInvoicePlan:
    """The expenses and invoice body that make Noko show exactly this document."""
    exp = doc.exponent
    expenses: list[NokoExpensePlan] = []
    entries: list[NokoEntryPlan] = []
    for line in doc.lines:
        if doc.hourly_rate_minor is not None and line.minutes is not None:
            entries.append(
                NokoEntryPlan(
                    line_key=line.key,
                    project=line.project,
                    date=(line.date or doc.invoice_date).isoformat(),
                    minutes=line.minutes,
                    description=_marked(_no_hashtags(line.description), doc.reference, line.key),
                )
            )
            continue
        expenses.append(
            NokoExpensePlan(
                line_key=line.key,
                project=line.project,
                date=(line.date or doc.invoice_date).isoformat(),
                price=to_major(line.amount_minor, exp),
                taxable=line.taxable,
                description=_marked(line.description, doc.reference, line.key),
            )
        )

    taxes: list[tuple[str, Decimal]] = []
    if doc.tax is not None and doc.tax.amount_minor:
        rate = doc.tax.rate
        reproduced = tax_amount(doc.taxable_subtotal_minor, rate)
        if _noko_can_hold(rate) and reproduced == doc.tax.amount_minor:
            taxes.append((doc.tax.name, rate.quantize(Decimal("0.01"))))
        else:
            base = to_major(doc.taxable_subtotal_minor, exp)
            rate_text = format(rate.normalize(), "f")
            text = f"{doc.tax.name} ({rate_text}% of {base} {doc.currency})"
            project = doc.projects[0] if doc.projects else doc.lines[0].project
            expenses.append(
                NokoExpensePlan(
                    line_key=TAX_LINE_KEY,
                    project=project,
                    date=doc.invoice_date.isoformat(),
                    price=to_major(doc.tax.amount_minor, exp),
                    taxable=False,
                    description=_marked(text, doc.reference, TAX_LINE_KEY),
                )
            )

    fields: dict[str, Any] = {
        "invoice_date": doc.invoice_date.isoformat(),
        "reference": doc.reference,
        "project_name": ", ".join(doc.projects),
        # Noko's docs: `company_name` is "the company issuing the invoice", and
        # `recipient_details` "the mailing address and other information for the invoice's
        # recipient": the customer goes there, the issuer (a profile setting) in company_name.
        "company_name": doc.issuer_name,
        "recipient_details": _recipient(doc),
        "description": _description(doc),
        "footer": f"{_footer(doc)} {owner_marker(doc.reference)}",
        "show_hours_worked": False,
        "customization": {"currency_code": doc.currency, "currency_symbol": doc.currency_symbol}
        if doc.currency_symbol
        else {"currency_code": doc.currency},
    }
    if doc.hourly_rate_minor is not None and entries:
        fields["rate_calculation"] = {
            "calculation_method": "standard_hourly_rate",
            "standard_hourly_rate": to_major(doc.hourly_rate_minor, exp),
        }
    return NokoInvoicePlan(
        kantata_id=doc.kantata_id,
        reference=doc.reference,
        fields=fields,
        expenses=tuple(expenses),
        taxes=tuple(taxes),
        expected_total=to_major(doc.total_minor, exp),
        expected_tax_total=to_major(doc.tax_minor if taxes else 0, exp),
        exponent=exp,
        currency=doc.currency,
        entries=tuple(entries),
        billing_increment=doc.billing_increment,
    )


def _recipient(doc: LedgerDocument) -> str:
    """The customer's name, then the recipient's email, one per line."""
    return "\n".join(part for part in (doc.customer_name, doc.customer_details) if part)


def _description(doc: LedgerDocument) -> str:
    parts = [doc.title or f"Kantata invoice {doc.number or doc.kantata_id}"]
    if doc.purchase_order:
        parts.append(f"Purchase order: {doc.purchase_order}")
    if doc.project_code:
        parts.append(f"Project code: {doc.project_code}")
    if doc.message:
        parts.append(doc.message)
    return "\n\n".join(parts)


def _footer(doc: LedgerDocument) -> str:
    parts = []
    if doc.due_date is not None:
        net = f" (net {doc.payment_schedule})" if doc.payment_schedule is not None else ""
        parts.append(f"Due {doc.due_date.isoformat()}{net}.")
    number = f" #{doc.number}" if doc.number else ""
    parts.append(f"Kantata invoice{number} (id {doc.kantata_id}).")
    return " ".join(parts)


def _amount(value: Any, exponent: int) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return to_minor(Decimal(str(value)), exponent)
    except (ValueError, InvalidOperation):
        return None


def check_totals(plan: NokoInvoicePlan, invoice: Mapping[str, Any]) -> list[str]:
    """Differences between Noko's invoice totals and the plan's, each naming both figures as
    money with the currency; empty when they agree."""
    problems: list[str] = []
    exp = plan.exponent

    def shown(field: str) -> str:
        minor = _amount(invoice.get(field), exp)
        if minor is None:
            return f"{invoice.get(field)!r}" if field in invoice else "missing"
        return format_money(minor, exp, plan.currency)

    expected = to_minor(plan.expected_total, exp)
    got = _amount(invoice.get("total_amount"), exp)
    if got != expected:
        problems.append(
            f"Noko's total_amount is {shown('total_amount')} but Kantata's total is "
            f"{format_money(expected, exp, plan.currency)}"
        )
    tax_expected = to_minor(plan.expected_tax_total, exp)
    tax_got = _amount(invoice.get("tax_total_amount"), exp)
    if "tax_total_amount" in invoice and tax_got != tax_expected:
        problems.append(
            f"Noko's tax_total_amount is {shown('tax_total_amount')} but the tax it should "
            f"charge is {format_money(tax_expected, exp, plan.currency)}"
        )
    return problems
