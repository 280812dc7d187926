"""Kantata invoice -> ledger document (or a `MappingError` naming the field at fault)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

from mappings.errors import MappingError
from mappings.kantata import KantataInvoice, KantataLine
from mappings.ledger import LedgerDocument, LedgerLine, LedgerTax
from mappings.money import MAX_ABS_MINOR, format_money, tax_amount, to_major
from mappings.profile import Profile

KIND_LABEL = {
    "time_entry": "Time",
    "expense": "Expense",
    "additional_item": "Additional item",
    "fixed_fee_item": "Fixed fee",
    "billing_milestone": "Milestone",
}


def reference_for(invoice: KantataInvoice, profile: Profile) -> str:
    """The deterministic reference of a Kantata invoice (the profile's `[ledger] reference`)."""
    return profile.ledger.reference.format(id=invoice.id, number=invoice.user_invoice_number)


def reference_for_id(invoice_id: str, profile: Profile, number: str = "") -> str:
    return profile.ledger.reference.format(id=invoice_id, number=number)


def to_ledger(invoice: KantataInvoice, profile: Profile) -> LedgerDocument:
    """Map one decoded Kantata invoice; totals per money.md, lines per the profile."""
    allowed = profile.currencies.allowed
    if allowed and invoice.currency not in allowed:
        raise MappingError(
            invoice.id,
            "currency",
            f"{invoice.currency} is not in the profile's allowed currencies ({', '.join(allowed)})",
        )
    if invoice.invoice_date is None:
        raise MappingError(invoice.id, "invoice_date", "is missing")

    workspace_titles = {ws.id: ws.title for ws in invoice.workspaces}
    default_workspace = invoice.workspaces[0] if invoice.workspaces else None

    names: dict[str | None, str] = {}  # by the line's workspace id: lines share a few

    def project_of(line: KantataLine) -> str:
        name = names.get(line.workspace_id)
        if name is None:
            if line.workspace_id is None and len(invoice.workspaces) > 1:
                # Kantata did not say which of the invoice's projects the line is on (see
                # mappings.kantata): it is booked on one project named after all of them,
                # never on a guessed one.
                name = profile.ledger.project_name.format(
                    workspace=" + ".join(ws.title or ws.id for ws in invoice.workspaces),
                    workspace_id="+".join(ws.id for ws in invoice.workspaces),
                )
                names[None] = name
                return name
            ws_id = line.workspace_id if line.workspace_id in workspace_titles else None
            if ws_id is None and default_workspace is not None:
                ws_id = default_workspace.id
            title = workspace_titles.get(ws_id or "", "") or f"Kantata invoice {invoice.id}"
            name = profile.ledger.project_name.format(workspace=title, workspace_id=ws_id or "")
            names[line.workspace_id] = name
        return name

    # money.md: a non-billable time entry is not billed; it is no line at all.
    billed = tuple(line for line in invoice.lines if line.billable)
    subtotal = sum(line.amount_minor for line in billed)
    taxable_subtotal = sum(line.amount_minor for line in billed if line.taxable)
    tax_minor = tax_amount(taxable_subtotal, invoice.tax_rate) if invoice.tax_rate else 0
    total = subtotal + tax_minor
    for label, value in (("subtotal", subtotal), ("total", total)):
        if abs(value) > MAX_ABS_MINOR:
            raise MappingError(invoice.id, label, f"{value} exceeds ±10^13 minor units")
    _check_balance(invoice, total, tax_minor)

    def describe(line: KantataLine) -> str:
        return _describe(line, invoice.exponent)

    lines = _lines(billed, profile, project_of, describe, invoice.invoice_date)
    if not profile.lines.include_zero_amount:
        lines = [line for line in lines if line.amount_minor != 0]

    tax = None
    if invoice.tax_rate and taxable_subtotal:
        rate_text = format(invoice.tax_rate.normalize(), "f")
        tax = LedgerTax(profile.tax.name.format(rate=rate_text), invoice.tax_rate, tax_minor)

    hourly_rate: int | None = None
    time_note = ""
    if profile.time.mode == "entries":
        hourly_rate, time_note = _entries_rate(invoice, profile, lines, tax)
        if hourly_rate is not None:
            minutes = {line.key: line.minutes for line in billed if line.kind == "time_entry"}
            lines = [
                replace(line, minutes=minutes[line.key]) if line.key in minutes else line
                for line in lines
            ]

    customer, customer_id = _customer(invoice, profile)
    due = _due_date(invoice)
    projects = tuple(dict.fromkeys(project_of(line) for line in billed)) or tuple(
        dict.fromkeys(
            profile.ledger.project_name.format(workspace=ws.title, workspace_id=ws.id)
            for ws in invoice.workspaces
        )
    )
    return LedgerDocument(
        kantata_id=invoice.id,
        reference=reference_for(invoice, profile),
        number=invoice.user_invoice_number,
        title=invoice.user_invoice_title or invoice.title,
        invoice_date=invoice.invoice_date,
        due_date=due,
        payment_schedule=invoice.payment_schedule,
        currency=invoice.currency,
        exponent=invoice.exponent,
        currency_symbol=invoice.currency_symbol,
        customer_name=customer,
        customer_details=invoice.recipient.email_address if invoice.recipient else "",
        purchase_order=invoice.purchase_order,
        project_code=invoice.project_code,
        message=invoice.message,
        projects=projects,
        lines=tuple(lines),
        tax=tax,
        subtotal_minor=subtotal,
        taxable_subtotal_minor=taxable_subtotal,
        tax_minor=tax_minor,
        total_minor=total,
        balance_in_cents=invoice.balance_in_cents,
        hourly_rate_minor=hourly_rate,
        time_note=time_note,
        billing_increment=profile.time.billing_increment
        if profile.time.mode == "entries"
        else None,
        issuer_name=profile.ledger.issuer_name,
        customer_id=customer_id,
    )


def _check_balance(invoice: KantataInvoice, total: int, tax_minor: int) -> None:
    """money.md: `balance_in_cents` is Kantata's own statement of the invoice total. Where it
    differs from the total of the lines, the invoice is not pushed: a `MappingError` names both
    figures. An invoice without a balance has nothing to disagree with."""
    balance = invoice.balance_in_cents
    if balance is None or balance == total:
        return
    stated = format_money(balance, invoice.exponent, invoice.currency)
    computed = format_money(total, invoice.exponent, invoice.currency)
    with_tax = (
        f" (with {format_money(tax_minor, invoice.exponent, invoice.currency)} tax at "
        f"{format(invoice.tax_rate.normalize(), 'f')}%)"
        if tax_minor
        else ""
    )
    raise MappingError(
        invoice.id,
        "balance_in_cents",
        f"Kantata states {stated} (balance_in_cents) but its lines add up to {computed}"
        f"{with_tax}; not pushed until Kantata and the lines agree",
    )


def _entries_rate(
    invoice: KantataInvoice, profile: Profile, lines: list[LedgerLine], tax: LedgerTax | None
) -> tuple[int | None, str]:
    """The one hourly rate that makes Noko time entries exact, or (None, why not)."""
    if profile.lines.detail != "itemized":
        return None, "time entries need itemized line detail"
    keys = {line.key for line in lines}
    time_lines = [t for t in invoice.lines if t.kind == "time_entry" and t.key in keys]
    if not time_lines:
        return None, ""
    rates = {t.rate_minor for t in time_lines}
    if len(rates) != 1:
        return None, "time entries have more than one hourly rate"
    rate = rates.pop()
    if rate is None or rate <= 0:
        return None, "time entries have no positive hourly rate"
    increment = profile.time.billing_increment
    if any((t.minutes or 0) <= 0 or (t.minutes or 0) % increment for t in time_lines):
        return None, f"a duration is not a multiple of the {increment}-minute billing increment"
    noko_tax = tax is not None and tax.rate == tax.rate.quantize(Decimal("0.01"))
    if noko_tax and not all(t.taxable for t in time_lines):
        return None, "some time is not taxable, but Noko taxes every time entry"
    return rate, ""


def _due_date(invoice: KantataInvoice) -> date | None:
    if invoice.invoice_date is not None and invoice.payment_schedule is not None:
        return invoice.invoice_date + timedelta(days=invoice.payment_schedule)
    return invoice.due_date


def _customer(invoice: KantataInvoice, profile: Profile) -> tuple[str, str | None]:
    """(the customer's name, Kantata's id of the customer when the name is the recipient's)."""
    recipient = invoice.recipient
    table = profile.customer.names
    if table:
        if recipient is not None:
            for key in (recipient.email_address, recipient.id):
                if key and key in table:
                    return table[key], recipient.id
        for ws in invoice.workspaces:
            if ws.id and ws.id in table:
                return table[ws.id], None
    titles = ", ".join(ws.title for ws in invoice.workspaces if ws.title)
    if profile.customer.source == "recipient" and recipient is not None:
        name = recipient.full_name.strip()
        if name:
            return name, recipient.id
    return titles or profile.customer.fallback, None


def _describe(line: KantataLine, exponent: int) -> str:
    label = KIND_LABEL[line.kind]
    text = line.description.strip()
    if line.kind == "time_entry" and line.minutes is not None and line.rate_minor is not None:
        hours, minutes = divmod(line.minutes, 60)
        detail = f"{hours}:{minutes:02d} h at {to_major(line.rate_minor, exponent)}/h"
        label = f"{label} {detail}"
    elif line.kind == "expense" and line.category:
        label = f"{label} ({line.category})"
    return f"{label}: {text}" if text else label


def _lines(
    source: Iterable[KantataLine],
    profile: Profile,
    project_of: Callable[[KantataLine], str],
    describe: Callable[[KantataLine], str],
    invoice_date: date,
) -> list[LedgerLine]:
    items = list(source)
    detail = profile.lines.detail
    if detail == "itemized":
        return [
            LedgerLine(
                line.key,
                line.kind,
                describe(line),
                line.date,
                line.amount_minor,
                line.taxable,
                project_of(line),
            )
            for line in items
        ]
    groups: dict[tuple[str, str, bool, str], list[KantataLine]] = {}
    for line in items:
        task = line.story_id or "" if detail == "per_task" else ""
        groups.setdefault((line.kind, task, line.taxable, project_of(line)), []).append(line)
    out: list[LedgerLine] = []
    for (kind, task, taxable, project), members in groups.items():
        project_tag = hashlib.sha256(project.encode()).hexdigest()[:8]
        key = f"{kind}{'-s' + task if task else ''}{'-tax' if taxable else ''}-{project_tag}"
        label = KIND_LABEL[kind] + (f" (task {task})" if task else "")
        count = len(members)
        dates = [m.date for m in members if m.date is not None]
        out.append(
            LedgerLine(
                key,
                kind,
                f"{label}: {count} item{'s' if count != 1 else ''}",
                max(dates) if dates else invoice_date,
                sum(m.amount_minor for m in members),
                taxable,
                project,
            )
        )
    return out


def describe_total(doc: LedgerDocument) -> str:
    return format_money(doc.total_minor, doc.exponent, doc.currency)
