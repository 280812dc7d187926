"""The ledger document: what one Kantata invoice means for the books, independent of any API.

Totals follow money.md and are computed from the Kantata line items before any roll-up, so the
document's `total_minor` is the Kantata total whatever line detail the operator chose.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import date
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class LedgerLine:
    key: str
    """Stable key: a Kantata line key (`te123`) or a roll-up group key (`time`, `time-s77`)."""
    kind: str
    description: str
    date: date | None
    amount_minor: int
    taxable: bool
    project: str
    """Name of the accounting-side project the line is booked on."""


@dataclass(frozen=True)
class LedgerTax:
    name: str
    rate: Decimal
    amount_minor: int


@dataclass(frozen=True)
class LedgerDocument:
    kantata_id: str
    reference: str
    number: str
    title: str
    invoice_date: date
    due_date: date | None
    payment_schedule: int | None
    currency: str
    exponent: int
    currency_symbol: str
    customer_name: str
    customer_details: str
    purchase_order: str
    project_code: str
    message: str
    projects: tuple[str, ...]
    lines: tuple[LedgerLine, ...]
    tax: LedgerTax | None
    subtotal_minor: int
    taxable_subtotal_minor: int
    tax_minor: int
    total_minor: int
    balance_in_cents: int | None
    """Kantata's own balance: recorded for the report's warnings, not part of the fingerprint."""

    def fingerprint(self) -> str:
        """sha256 of everything the document says except Kantata's untrusted balance."""
        data = asdict(self)
        data.pop("balance_in_cents")
        blob = json.dumps(data, sort_keys=True, default=_plain, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def balance_mismatch(self) -> bool:
        return self.balance_in_cents is not None and self.balance_in_cents != self.total_minor


def _plain(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot fingerprint {type(value).__name__}")
