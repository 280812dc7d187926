"""The typed Kantata records: invoices, their lines, workspaces, people and references; an
invoice that could not be decoded, with the error naming its field."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from mappings.errors import MappingError

LineKind = Literal[
    "time_entry", "expense", "additional_item", "fixed_fee_item", "billing_milestone"
]

# invoice field holding the ids -> (include map key, line kind)
LINE_ASSOCIATIONS: tuple[tuple[str, str, LineKind], ...] = (
    ("time_entry_ids", "time_entries", "time_entry"),
    ("expense_ids", "expenses", "expense"),
    ("additional_item_ids", "additional_items", "additional_item"),
    ("fixed_fee_item_ids", "fixed_fee_items", "fixed_fee_item"),
    ("billing_milestone_ids", "billing_milestones", "billing_milestone"),
)

KIND_PREFIX: dict[str, str] = {
    "time_entry": "te",
    "expense": "ex",
    "additional_item": "ai",
    "fixed_fee_item": "ff",
    "billing_milestone": "bm",
}


@dataclass(frozen=True)
class KantataUser:
    id: str
    full_name: str
    email_address: str


@dataclass(frozen=True)
class KantataWorkspace:
    id: str
    title: str


@dataclass(frozen=True)
class KantataExternalReference:
    id: str
    service_name: str
    service_model: str
    service_model_ref: str
    status: str
    external_status: str
    external_message: str
    external_link: str


@dataclass(frozen=True)
class KantataLine:
    """One line item, its amount already in integer minor units of the invoice currency."""

    kind: LineKind
    id: str
    amount_minor: int
    taxable: bool
    date: date | None
    description: str
    workspace_id: str | None
    story_id: str | None
    user_id: str | None
    minutes: int | None = None
    rate_minor: int | None = None
    category: str | None = None
    billable: bool = True
    """False for a time entry whose `billable` (or `is_billable`) is false: money.md bills it
    not at all, so it is no line of the ledger document."""

    @property
    def key(self) -> str:
        """Stable key of the line across edits of the invoice, e.g. `te8571785`."""
        return f"{KIND_PREFIX[self.kind]}{self.id}"


@dataclass(frozen=True)
class KantataInvoice:
    id: str
    created_at: datetime | None
    updated_at: datetime
    invoice_date: date | None
    due_date: date | None
    payment_schedule: int | None
    draft: bool
    status: str
    title: str
    user_invoice_number: str
    user_invoice_title: str
    purchase_order: str
    project_code: str
    message: str
    tax_rate: Decimal
    balance_in_cents: int | None
    currency: str
    exponent: int
    currency_symbol: str
    recipient: KantataUser | None
    workspaces: tuple[KantataWorkspace, ...]
    lines: tuple[KantataLine, ...]
    external_references: tuple[KantataExternalReference, ...]
    source_fingerprint: str
    """Hash of the invoice as Kantata sent it, minus timestamps and references: changes iff the
    invoice itself changed, also for invoices that cannot be mapped."""
    references_included: bool = True
    """Whether Kantata sent the invoice's `external_reference_ids` (the include was honoured):
    only then does a missing reference mean that it is not there."""

    @property
    def is_cancelled(self) -> bool:
        return self.status.strip().lower() == "cancelled"

    def reference_for(self, service_name: str) -> KantataExternalReference | None:
        for ref in self.external_references:
            if ref.service_name == service_name:
                return ref
        return None


@dataclass(frozen=True)
class UndecodableInvoice:
    """A result that could not be decoded; `error` names the invoice and field."""

    id: str
    error: MappingError
    updated_at: datetime | None
    source_fingerprint: str
    draft: bool | None = None
    status: str | None = None


DecodedInvoice = KantataInvoice | UndecodableInvoice
