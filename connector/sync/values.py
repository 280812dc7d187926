"""Small value helpers the engine's parts share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connector.state.store import InvoiceRecord
from mappings.ledger import LedgerDocument
from mappings.money import format_money, to_minor


def done(record: InvoiceRecord) -> bool:
    """Nothing more will be created for this invoice: its uninvoiced leftovers are garbage."""
    if record.stage:
        return False
    return (record.status == "synced" and record.target_id is not None) or (
        record.status == "skipped"
    )


def int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def text_id(value: Any) -> str | None:
    """A target's id as the text the engine keeps ("123" for Noko's 123); None when absent."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


def minor(value: Any, exponent: int) -> int | None:
    try:
        return to_minor(str(value), exponent)
    except (ValueError, ArithmeticError):
        return None


def describe(doc: LedgerDocument) -> str:
    return (
        f"{doc.reference}: {len(doc.lines)} line{'' if len(doc.lines) == 1 else 's'}, "
        f"{format_money(doc.total_minor, doc.exponent, doc.currency)}"
    )


def parse_moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def fmt_total(total_minor: int | None, record: InvoiceRecord) -> str:
    if total_minor is None or record.exponent is None or not record.currency:
        return "unknown"
    return format_money(total_minor, record.exponent, record.currency)


TAKEN_OUT = frozenset({"deleted", "DELETED", "VOIDED"})
"""States of an invoice taken out of the target's books (the target's own word: Noko's
`deleted`, Xero's `DELETED` and `VOIDED`)."""
