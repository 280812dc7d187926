"""Typed Kantata records decoded from API bodies: lenient about ids, strict about money.

`decode_invoices(body)` turns one `GET /invoices` page (results order, id-keyed maps, side-loaded
associations) into one `KantataInvoice` or one `MappingError` per result, so a single malformed
invoice never spoils its page.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from mappings.canonical import canonical_json
from mappings.errors import MappingError
from mappings.money import (
    MAX_ABS_MINOR,
    MoneyError,
    exponent_for_base_unit,
    exponent_for_code,
    time_amount,
)

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


# --------------------------------------------------------------------------------------------
# field readers


class _Reader:
    """Reads typed fields of one record, raising `MappingError` that names invoice and field."""

    def __init__(self, invoice_id: str, record: Mapping[str, Any], prefix: str) -> None:
        self.invoice_id = invoice_id
        self.record = record
        self.prefix = prefix

    def fail(self, field: str, message: str) -> MappingError:
        return MappingError(self.invoice_id, f"{self.prefix}{field}", message)

    def raw(self, field: str) -> Any:
        return self.record.get(field)

    def text(self, field: str, *, required: bool = False) -> str:
        value = self.record.get(field)
        if value is None:
            if required:
                raise self.fail(field, "is missing")
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            return str(value)
        raise self.fail(field, f"expected text, got {type(value).__name__}")

    def ident(self, field: str, *, required: bool = False) -> str | None:
        value = self.record.get(field)
        if value is None or value == "":
            if required:
                raise self.fail(field, "is missing")
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.fail(field, f"expected an id, got {type(value).__name__}")
        return str(value)

    def flag(self, field: str, *, default: bool = False) -> bool:
        value = self.record.get(field)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if value in ("true", "1", 1):
            return True
        if value in ("false", "0", 0):
            return False
        raise self.fail(field, f"expected true or false, got {value!r}")

    def integer(
        self, field: str, *, required: bool = False, minimum: int | None = None
    ) -> int | None:
        value = self.record.get(field)
        if value is None or value == "":
            if required:
                raise self.fail(field, "is missing")
            return None
        number = _as_integer(value)
        if number is None:
            raise self.fail(field, f"expected a whole number, got {value!r}")
        if minimum is not None and number < minimum:
            raise self.fail(field, f"must be at least {minimum}, got {number}")
        return number

    def amount(self, field: str) -> int:
        """A money amount in minor units: required, whole, within ±10^13."""
        value = self.record.get(field)
        if value is None or value == "":
            raise self.fail(field, "is missing")
        number = _as_integer(value)
        if number is None:
            raise self.fail(field, f"must be a whole number of minor units, got {value!r}")
        if abs(number) > MAX_ABS_MINOR:
            raise self.fail(field, f"{number} exceeds the limit of ±10^13 minor units")
        return number

    def day(self, field: str) -> date | None:
        value = self.record.get(field)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.fail(field, f"expected a date, got {value!r}")
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            raise self.fail(field, f"not an ISO 8601 date: {value!r}") from None

    def moment(self, field: str, *, required: bool = False) -> datetime | None:
        value = self.record.get(field)
        if value is None or value == "":
            if required:
                raise self.fail(field, "is missing")
            return None
        if not isinstance(value, str):
            raise self.fail(field, f"expected a timestamp, got {value!r}")
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise self.fail(field, f"not an ISO 8601 timestamp: {value!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def ids(self, field: str) -> list[str] | None:
        value = self.record.get(field)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail(field, f"expected a list of ids, got {type(value).__name__}")
        out: list[str] = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, str | int) or item == "":
                raise self.fail(field, f"holds a value that is not an id: {item!r}")
            out.append(str(item))
        return out


_INTEGER_TEXT = re.compile(r"-?[0-9]+")


def _as_integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() else None
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER_TEXT.fullmatch(text):
            try:
                return int(text)
            except ValueError:  # beyond the interpreter's digit limit
                return None
    return None


def _tax_rate(reader: _Reader) -> Decimal:
    value = reader.raw("tax_rate")
    if value is None or value == "":
        return Decimal(0)
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise reader.fail("tax_rate", f"expected a percentage, got {value!r}")
    try:
        rate = Decimal(str(value))
    except InvalidOperation:
        raise reader.fail("tax_rate", f"expected a percentage, got {value!r}") from None
    if not rate.is_finite() or rate < 0 or rate > 100:
        raise reader.fail("tax_rate", f"must be between 0 and 100, got {value!r}")
    return rate.normalize() if rate != 0 else Decimal(0)


def _fingerprint(invoice_id: str, record: Mapping[str, Any], lines: Mapping[str, Any]) -> str:
    volatile = {"updated_at", "external_reference_ids"}
    payload = {
        "id": invoice_id,
        "invoice": {k: v for k, v in record.items() if k not in volatile},
        "lines": lines,
    }
    return hashlib.sha256(canonical_json(payload, str)).hexdigest()


# --------------------------------------------------------------------------------------------
# decoding


def _map(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body.get(key)
    return value if isinstance(value, Mapping) else {}


def result_ids(body: Mapping[str, Any], key: str = "invoices") -> list[str]:
    """Ids of the page's results of one key, in the order of `results`."""
    results = body.get("results")
    if not isinstance(results, list):
        return []
    out: list[str] = []
    for item in results:
        if isinstance(item, Mapping) and item.get("key") == key and item.get("id") is not None:
            out.append(str(item["id"]))
    return out


def decode_invoices(body: Mapping[str, Any]) -> list[DecodedInvoice]:
    """Every invoice of a page body, in `results` order; bad ones as `UndecodableInvoice`."""
    invoices = _map(body, "invoices")
    out: list[DecodedInvoice] = []
    for invoice_id in result_ids(body):
        record = invoices.get(invoice_id)
        if not isinstance(record, Mapping):
            error = MappingError(
                invoice_id, "invoices", "listed in results but absent from the map"
            )
            out.append(
                UndecodableInvoice(invoice_id, error, None, _fingerprint(invoice_id, {}, {}))
            )
            continue
        out.append(decode_invoice(invoice_id, record, body))
    return out


def decode_invoice(
    invoice_id: str, record: Mapping[str, Any], body: Mapping[str, Any]
) -> DecodedInvoice:
    """One invoice with its side-loaded lines, workspaces, recipient and references."""
    raw_lines: dict[str, Any] = {}
    for ids_field, map_key, _kind in LINE_ASSOCIATIONS:
        ids = record.get(ids_field)
        if isinstance(ids, list):
            side = _map(body, map_key)
            raw_lines[ids_field] = [side.get(str(i)) for i in ids]
    fingerprint = _fingerprint(invoice_id, record, raw_lines)
    reader = _Reader(invoice_id, record, "")
    try:
        return _decode(invoice_id, reader, body, fingerprint)
    except MappingError as error:
        try:
            updated_at = reader.moment("updated_at")
        except MappingError:
            updated_at = None
        draft = record.get("draft")
        status = record.get("status")
        return UndecodableInvoice(
            invoice_id,
            error,
            updated_at,
            fingerprint,
            draft=draft if isinstance(draft, bool) else None,
            status=status if isinstance(status, str) else None,
        )


def _decode(
    invoice_id: str, r: _Reader, body: Mapping[str, Any], fingerprint: str
) -> KantataInvoice:
    updated_at = r.moment("updated_at", required=True)
    assert updated_at is not None
    draft = r.flag("draft")
    status = r.text("status")
    currency = r.text("currency", required=True).strip().upper()
    try:
        code_exponent = exponent_for_code(currency)
    except MoneyError:
        raise r.fail("currency", f"unknown currency {currency!r}") from None
    base_unit = r.integer("currency_base_unit")
    exponent = code_exponent
    if base_unit is not None:
        try:
            exponent = exponent_for_base_unit(base_unit)
        except MoneyError as exc:
            raise r.fail("currency_base_unit", str(exc)) from None
        if exponent != code_exponent:
            raise r.fail(
                "currency_base_unit",
                f"{base_unit} does not match {currency}'s minor unit (10^{code_exponent})",
            )

    workspaces: list[KantataWorkspace] = []
    workspace_map = _map(body, "workspaces")
    for ws_id in r.ids("workspace_ids") or []:
        ws = workspace_map.get(ws_id)
        if not isinstance(ws, Mapping):
            raise r.fail("workspace_ids", f"workspace {ws_id} is absent from the included map")
        workspaces.append(KantataWorkspace(ws_id, _Reader(invoice_id, ws, "").text("title")))

    recipient: KantataUser | None = None
    recipient_id = r.ident("recipient_id")
    if recipient_id is not None:
        user = _map(body, "users").get(recipient_id)
        if isinstance(user, Mapping):
            ur = _Reader(invoice_id, user, f"users[{recipient_id}].")
            recipient = KantataUser(recipient_id, ur.text("full_name"), ur.text("email_address"))

    lines = _decode_lines(invoice_id, r, body, currency)
    if len(workspaces) == 1:
        # Kantata gives a time entry's or expense's `workspace_id` only with a `workspace`
        # include, which the invoice list has no documented way to ask for. On an invoice of
        # one project every line is on that project: said, not guessed.
        only = workspaces[0].id
        lines = [
            line if line.workspace_id is not None else replace(line, workspace_id=only)
            for line in lines
        ]

    references: list[KantataExternalReference] = []
    ref_map = _map(body, "external_references")
    for ref_id in r.ids("external_reference_ids") or []:
        ref = ref_map.get(ref_id)
        if isinstance(ref, Mapping):
            rr = _Reader(invoice_id, ref, f"external_references[{ref_id}].")
            references.append(
                KantataExternalReference(
                    ref_id,
                    rr.text("service_name"),
                    rr.text("service_model"),
                    rr.text("service_model_ref"),
                    rr.text("status"),
                    rr.text("external_status"),
                    rr.text("external_message"),
                    rr.text("external_link"),
                )
            )

    number = r.raw("user_invoice_number")
    return KantataInvoice(
        id=invoice_id,
        created_at=r.moment("created_at"),
        updated_at=updated_at,
        invoice_date=r.day("invoice_date"),
        due_date=r.day("due_date"),
        payment_schedule=r.integer("payment_schedule", minimum=0),
        draft=draft,
        status=status,
        title=r.text("title"),
        user_invoice_number="" if number is None else r.text("user_invoice_number"),
        user_invoice_title=r.text("user_invoice_title"),
        purchase_order=r.text("purchase_order"),
        project_code=r.text("project_code"),
        message=r.text("message"),
        tax_rate=_tax_rate(r),
        balance_in_cents=None
        if r.raw("balance_in_cents") is None
        else r.amount("balance_in_cents"),
        currency=currency,
        exponent=exponent,
        currency_symbol=r.text("currency_symbol"),
        recipient=recipient,
        workspaces=tuple(workspaces),
        lines=tuple(lines),
        external_references=tuple(references),
        source_fingerprint=fingerprint,
        references_included="external_reference_ids" in r.record,
    )


def _decode_lines(
    invoice_id: str, r: _Reader, body: Mapping[str, Any], currency: str
) -> list[KantataLine]:
    present = [field for field, _, _ in LINE_ASSOCIATIONS if field in r.record]
    if not present:
        raise r.fail(
            "time_entry_ids",
            "no line-item id lists on the invoice (were the line items included?)",
        )
    lines: list[KantataLine] = []
    for ids_field, map_key, kind in LINE_ASSOCIATIONS:
        side = _map(body, map_key)
        for line_id in r.ids(ids_field) or []:
            record = side.get(line_id)
            if not isinstance(record, Mapping):
                raise r.fail(ids_field, f"{kind} {line_id} is absent from the included map")
            lines.append(_decode_line(invoice_id, kind, map_key, line_id, record, currency))
    return lines


def _decode_line(
    invoice_id: str,
    kind: LineKind,
    map_key: str,
    line_id: str,
    record: Mapping[str, Any],
    currency: str,
) -> KantataLine:
    lr = _Reader(invoice_id, record, f"{map_key}[{line_id}].")
    line_currency = lr.text("currency").strip().upper()
    if line_currency and line_currency != currency:
        raise lr.fail("currency", f"{line_currency} differs from the invoice currency {currency}")
    workspace_id = lr.ident("workspace_id")
    story_id = lr.ident("story_id")
    user_id = lr.ident("user_id")
    taxable = lr.flag("taxable")
    if kind == "time_entry":
        minutes = lr.integer("time_in_minutes", required=True, minimum=0)
        rate = lr.amount("rate_in_cents")
        assert minutes is not None
        amount = time_amount(minutes, rate)
        if abs(amount) > MAX_ABS_MINOR:
            raise lr.fail("rate_in_cents", "amount exceeds the limit of ±10^13 minor units")
        # money.md: a time entry whose `billable` (or `is_billable`) is false is not billed.
        billable = lr.flag("billable", default=True) and lr.flag("is_billable", default=True)
        return KantataLine(
            kind,
            line_id,
            amount,
            taxable,
            lr.day("date_performed"),
            lr.text("notes"),
            workspace_id,
            story_id,
            user_id,
            minutes=minutes,
            rate_minor=rate,
            billable=billable,
        )
    amount = lr.amount("amount_in_cents")
    if kind == "expense":
        return KantataLine(
            kind,
            line_id,
            amount,
            taxable,
            lr.day("date"),
            lr.text("notes"),
            workspace_id,
            story_id,
            user_id,
            category=lr.text("category") or None,
        )
    if kind == "billing_milestone":
        return KantataLine(
            kind,
            line_id,
            amount,
            taxable,
            lr.day("date_to_invoice"),
            lr.text("title") or lr.text("notes"),
            workspace_id,
            story_id,
            user_id,
        )
    return KantataLine(
        kind, line_id, amount, taxable, None, lr.text("notes"), workspace_id, story_id, user_id
    )


def page_meta(body: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(`count`, `meta.page_count`) of a page body, when present and whole."""
    count = _as_integer(body.get("count"))
    meta = body.get("meta")
    page_count = _as_integer(meta.get("page_count")) if isinstance(meta, Mapping) else None
    return count, page_count


def ids_of(values: Sequence[Any]) -> list[str]:
    return [str(v) for v in values]
