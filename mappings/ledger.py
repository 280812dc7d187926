"""The ledger document: what one Kantata invoice means for the books, independent of any API.

Totals follow money.md and are computed from the Kantata line items before any roll-up, so the
document's `total_minor` is the Kantata total whatever line detail the operator chose.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, is_dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from mappings.canonical import canonical_json


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
    minutes: int | None = None
    """Set on time lines that go to Noko as time entries (see `hourly_rate_minor`)."""


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
    hourly_rate_minor: int | None = None
    """When set, time lines are Noko time entries billed at this standard hourly rate."""
    time_note: str = ""
    """Why time entries mode did not apply to this invoice (empty when it did or was off)."""
    billing_increment: int | None = None
    """With `time.mode = "entries"`: the billing increment (minutes) the Noko projects the
    connector creates get. A setting of the profile, not part of the fingerprint."""
    issuer_name: str = ""
    """The company issuing the invoice (the profile's `[ledger] issuer_name`); the customer is
    `customer_name`, the recipient."""
    customer_id: str | None = None
    """Kantata's id of the customer (the invoice's recipient, its client lead) when
    `customer_name` names the recipient; None when the name comes from the projects or the
    fallback. Targets that keep customers (Xero's `ContactNumber`) find them by it. Not part of
    the fingerprint: who the customer is does not change what the document says."""

    def fingerprint(self) -> str:
        """sha256 of everything the document says except Kantata's untrusted balance."""
        data = _fields(self)
        data.pop("balance_in_cents")
        data.pop("time_note")
        data.pop("billing_increment")
        data.pop("customer_id")
        # Fields added after the first release are left out while unset, so that documents
        # pushed before them keep their fingerprints (and are not pushed again).
        if data["hourly_rate_minor"] is None:
            data.pop("hourly_rate_minor")
        if not data["issuer_name"]:
            data.pop("issuer_name")
        for line in data["lines"]:
            if line["minutes"] is None:
                line.pop("minutes")
        return hashlib.sha256(canonical_json(data, _plain)).hexdigest()

    @property
    def balance_mismatch(self) -> bool:
        return self.balance_in_cents is not None and self.balance_in_cents != self.total_minor


def _fields(value: Any) -> Any:
    """What `dataclasses.asdict` gives, with Decimals and dates already as `_plain` writes
    them: the same JSON, without asdict's deep copies or a Python call per leaf in `dumps`."""
    kind = type(value)
    if kind is tuple or kind is list:
        return [_fields(v) for v in value]
    names = _NAMES.get(kind)
    if names is None:
        if not is_dataclass(value) or isinstance(value, type):
            return _plain(value) if isinstance(value, Decimal | date) else value
        names = _NAMES.setdefault(kind, tuple(f.name for f in fields(value)))
    out = {}
    for name in names:
        item = getattr(value, name)
        leaf = type(item)
        if leaf in _AS_IS:  # by exact type: most fields, one set lookup
            pass
        elif isinstance(item, Decimal | date):
            item = _plain(item)
        elif item is not None and not isinstance(item, str | int):
            item = _fields(item)
        out[name] = item
    return out


_AS_IS = frozenset({str, int, bool, type(None)})
_NAMES: dict[type, tuple[str, ...]] = {}


def _plain(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot fingerprint {type(value).__name__}")
