"""A fake Kantata OX API (v1) for invoices, their line items and external references.

In-memory, thread-safe, answering in Kantata's response format (`count`, `results`, id-keyed
maps, `meta`), with timestamps in the account's local time zone (America/Los_Angeles, so the
offset changes with daylight saving). Line-item amounts are integers of the currency's minor
unit; the invoice's `balance_in_cents` is the total of money.md (tax included) unless a test
overrides it.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from sandbox._core import (
    ApiFailure,
    Request,
    Response,
    Route,
    Service,
    loads,
    parse_bool,
    parse_date,
    parse_timestamp,
)
from sandbox._money import (
    MoneyError,
    base_unit_for,
    currency_symbol,
    parse_decimal,
    round_minor,
)
from sandbox.faults import FaultConfig

__all__ = ["ACCOUNT_TZ", "LINE_KINDS", "REMOVED", "FakeKantata", "line_amount", "totals"]

ACCOUNT_TZ = ZoneInfo("America/Los_Angeles")

LINE_KINDS = ("time_entry", "expense", "additional_item", "fixed_fee_item", "billing_milestone")
COLLECTION = {
    "time_entry": "time_entries",
    "expense": "expenses",
    "additional_item": "additional_items",
    "fixed_fee_item": "fixed_fee_items",
    "billing_milestone": "billing_milestones",
}
IDS_FIELD = {
    "time_entry": "time_entry_ids",
    "expense": "expense_ids",
    "additional_item": "additional_item_ids",
    "fixed_fee_item": "fixed_fee_item_ids",
    "billing_milestone": "billing_milestone_ids",
}
KIND_OF_COLLECTION = {v: k for k, v in COLLECTION.items()}
# Id lists the API fills from the includes; a corrupted one is shown as given, after them.
_ID_LIST_FIELDS = frozenset({*IDS_FIELD.values(), "external_reference_ids"})
INCLUDES = frozenset(
    {*COLLECTION.values(), "workspaces", "user", "recipient", "external_references"}
)
ORDERS = frozenset(
    f"{key}:{direction}"
    for key in ("created_at", "updated_at", "id", "invoice_date")
    for direction in ("asc", "desc")
)
STATUSES = ("new", "cancelled", "accepted payment")
REF_STATUSES = ("pending", "successful", "failed")
# Line items that exist on their own in Kantata and are only attached to invoices; the others
# (additional and fixed fee items) are created with their invoice and die with it.
STANDALONE_KINDS = frozenset({"time_entry", "expense", "billing_milestone"})
_KIND_FIELDS = (
    ("additional_item", ("amount_in_cents", "notes", "taxable")),
    ("time_entry", ("time_in_minutes", "rate_in_cents", "date_performed", "billable", "story_id")),
    ("expense", ("date", "category", "is_billable", "reimbursable", "vendor_id")),
    ("billing_milestone", ("title", "date_to_invoice", "billing_type")),
)


class _Removed:
    """The value of a corrupted field that the API leaves out altogether."""

    def __repr__(self) -> str:
        return "REMOVED"


REMOVED: Any = _Removed()

# Bodies that answer a garbled invoice page with 200: a proxy's login page, a cut-off JSON body.
_GARBLED_PAGES = {
    "html": (
        "text/html; charset=utf-8",
        b"<!DOCTYPE html>\r\n<html><head><title>Sign in</title></head><body><h1>Proxy "
        b"authentication required</h1><form method=post><input name=user></form></body></html>",
    ),
    "json": ("application/json; charset=utf-8", b'{"count": 3, "results": [{"key": "invoices", "i'),
}


def _apply_raw(data: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Show raw corrupted values as given; `REMOVED` ones not at all."""
    for name, value in overrides.items():
        if value is REMOVED:
            data.pop(name, None)
        else:
            data[name] = value


@functools.lru_cache(maxsize=65536)
def _fmt(moment: datetime) -> str:
    """Kantata's timestamp form: account-local time with its offset, whole seconds."""
    return moment.astimezone(ACCOUNT_TZ).replace(microsecond=0).isoformat()


def _ts(moment: datetime) -> int:
    return int(moment.timestamp())


def _sid(value: int | None) -> str | None:
    return None if value is None else str(value)


def line_amount(kind: str, fields: Mapping[str, Any]) -> int:
    """A line's amount in minor units per money.md (time entries rounded half-up)."""
    if kind == "time_entry":
        minutes = int(fields["time_in_minutes"])
        rate = int(fields["rate_in_cents"])
        return round_minor(Decimal(minutes) * Decimal(rate) / Decimal(60))
    return int(fields["amount_in_cents"])


def _safe_amount(line: _Line) -> int | None:
    try:
        return line_amount(line.kind, line.fields)
    except (ValueError, TypeError, ArithmeticError):
        return None


def totals(lines: Iterable[tuple[str, Mapping[str, Any]]], tax_rate: Decimal) -> dict[str, int]:
    """subtotal, taxable_subtotal, tax and total (minor units) of (kind, fields) lines; a
    non-billable time entry is no part of them (money.md)."""
    subtotal = 0
    taxable = 0
    for kind, fields in lines:
        if kind == "time_entry" and (
            fields.get("billable") is False or fields.get("is_billable") is False
        ):
            continue  # money.md: a non-billable time entry is not billed
        amount = line_amount(kind, fields)
        subtotal += amount
        if fields.get("taxable") is True:
            taxable += amount
    tax = round_minor(Decimal(taxable) * tax_rate / Decimal(100))
    return {
        "subtotal": subtotal,
        "taxable_subtotal": taxable,
        "tax": tax,
        "total": subtotal + tax,
    }


class _SortedIndex:
    """(key, id) pairs kept sorted, with a parallel id list for fast slicing."""

    __slots__ = ("ids", "keys")

    def __init__(self) -> None:
        self.keys: list[tuple[Any, int]] = []
        self.ids: list[int] = []

    def add(self, key: Any, item: int) -> None:
        position = bisect.bisect_left(self.keys, (key, item))
        self.keys.insert(position, (key, item))
        self.ids.insert(position, item)

    def remove(self, key: Any, item: int) -> None:
        position = bisect.bisect_left(self.keys, (key, item))
        if position < len(self.keys) and self.keys[position] == (key, item):
            del self.keys[position]
            del self.ids[position]

    def between(self, after: float | None, before: float | None) -> list[int]:
        """Ids whose integer key is strictly after `after` and strictly before `before`."""
        keys = self.keys
        start = 0 if after is None else bisect.bisect_left(keys, (math.floor(after) + 1, -1))
        end = len(keys) if before is None else bisect.bisect_left(keys, (math.ceil(before), -1))
        return self.ids[start:end] if end > start else []


@dataclass
class _Line:
    id: int
    kind: str
    workspace_id: int
    currency: str
    created_at: datetime
    updated_at: datetime
    fields: dict[str, Any]
    invoice_id: int | None = None
    rendered: dict[str, Any] | None = None


class _Undo:
    """How an invoice was before it was first corrupted (see `FakeKantata.uncorrupt`)."""

    def __init__(self, balance_override: int | None, raw_overrides: dict[str, Any]) -> None:
        self.balance_override = balance_override
        self.raw_overrides = raw_overrides
        self.lines: dict[int, dict[str, Any] | None] = {}


@dataclass
class _Invoice:
    id: int
    created_at: datetime
    updated_at: datetime
    invoice_date: str
    due_date: str
    payment_schedule: int | None
    draft: bool
    status: str
    user_invoice_number: int
    user_invoice_title: str
    purchase_order: str
    project_code: str
    message: str
    tax_rate: Decimal
    currency: str
    recipient_id: int | None
    user_id: int
    workspace_ids: list[int]
    lines: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in LINE_KINDS})
    balance_override: int | None = None
    version: int = 0
    raw_overrides: dict[str, Any] = field(default_factory=dict)
    rendered: tuple[int, int, dict[str, Any]] | None = None


def _fail(
    status: int, message: str, *, kind: str = "validation", field: str | None = None
) -> NoReturn:
    error: dict[str, Any] = {"type": kind, "message": message}
    if field is not None:
        error["field"] = field
    raise ApiFailure(Response.json(status, {"errors": [error]}))


def _int(value: Any, name: str, *, minimum: int | None = None, optional: bool = False) -> Any:
    """A strict integer (ints or integral Decimals and digit strings); 422 otherwise."""
    if value is None and optional:
        return None
    result: int | None = None
    if isinstance(value, bool):
        result = None
    elif isinstance(value, int):
        result = value
    elif isinstance(value, Decimal) and value == value.to_integral_value():
        result = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        result = int(value.strip())
    if result is None:
        _fail(422, f"{name} must be an integer", field=name)
    assert result is not None
    if minimum is not None and result < minimum:
        _fail(422, f"{name} must be at least {minimum}", field=name)
    return result


def _date_str(value: Any, name: str, *, allow_empty: bool = False) -> str:
    if allow_empty and value in ("", None):
        return ""
    if parse_date(value) is None:
        _fail(422, f"{name} must be a date (YYYY-MM-DD)", field=name)
    return str(value)


def _rate(value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    parsed = parse_decimal(value)
    if parsed is None or parsed < 0:
        _fail(422, "tax_rate must be a non-negative decimal percentage", field="tax_rate")
    assert parsed is not None
    return parsed


def _render_rate(rate: Decimal) -> Decimal:
    """10 -> 10.0, 8.875 -> 8.875: a float-looking JSON number without a float."""
    exponent = rate.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= 0:
        return rate.quantize(Decimal("0.1"))
    return rate


# The schema gives a time entry's and an expense's `workspace_id` "only ... if `workspace` is
# in the list of included associations", an include of their own endpoints that the invoice
# list has no documented way to ask for: invoice pages leave it out.
LINES_WITHOUT_WORKSPACE = frozenset({"time_entry", "expense"})


class FakeKantata(Service):
    """The fake Kantata OX server's state and request handling (base path `/api/v1`)."""

    name = "kantata"
    base_path = "/api/v1"
    strip_json_suffix = True

    def __init__(
        self,
        *,
        token: str = "sandbox-kantata-token",  # noqa: S107 - the sandbox's fixed token
        faults: FaultConfig | None = None,
        rate_limit: float | None = None,
        burst: int = 5,
    ) -> None:
        super().__init__(faults=faults, rate_limit=rate_limit, burst=burst)
        self.token = token
        self._tokens: dict[str, bool] = {token: True}
        self._invoices: dict[int, _Invoice] = {}
        self._lines: dict[int, _Line] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._workspaces: dict[int, dict[str, Any]] = {}
        self._refs: dict[int, dict[str, Any]] = {}
        self._refs_by_subject: dict[tuple[str, str], dict[str, int]] = {}
        self._payments: dict[int, dict[str, Any]] = {}
        # Sorted indices: (key, id) tuples, kept sorted on every change.
        self._by_id: list[int] = []
        self._by_updated = _SortedIndex()
        self._by_created = _SortedIndex()
        self._by_date = _SortedIndex()
        self._totals_cache: dict[int, tuple[int, int, dict[str, int]]] = {}
        self._lines_version = 0
        self._next_invoice_id = 4001
        self._next_line_id = 8_500_001
        self._next_user_id = 2545
        self._next_workspace_id = 53_001
        self._next_ref_id = 701
        self._next_payment_id = 9_001
        self._next_number = 1
        self.account_user_id = self.add_user("Avery Admin", "avery.admin@sandbox.example")
        self._default_workspaces: dict[str, int] = {}
        self._garble: tuple[str, int] | None = None
        self.garbled = 0
        # What `uncorrupt` puts back, per invoice: its balance override and raw overrides
        # before the first corruption, and each corrupted line's fields before (None: added).
        self._corrupted: dict[int, _Undo] = {}
        self._max_per_page: int | None = None
        self._page_count_offset = 0
        self._register_routes()

    # ===== in-process admin API ==============================================================
    def now(self) -> datetime:
        """The fake's current time (aware UTC, whole seconds)."""
        return self.clock.now()

    def add_user(self, full_name: str, email_address: str, *, headline: str | None = None) -> int:
        """Create a user (a client contact or a consultant); returns its id."""
        with self.mutex:
            user_id = self._next_user_id
            self._next_user_id += 1
            self._users[user_id] = {
                "full_name": full_name,
                "photo_path": "https://app.mavenlink.com/images/default_profile_photo/default.png",
                "email_address": email_address,
                "headline": headline,
                "id": str(user_id),
            }
            return user_id

    def add_workspace(
        self,
        title: str,
        *,
        currency: str = "USD",
        client_id: int | None = None,
        default_rate_in_cents: int | None = None,
        created_at: datetime | None = None,
    ) -> int:
        """Create a workspace (project) in a currency; returns its id."""
        with self.mutex:
            code = currency.upper()
            base_unit = base_unit_for(code)
            workspace_id = self._next_workspace_id
            self._next_workspace_id += 1
            when = _fmt(created_at or self.now())
            rate = default_rate_in_cents if default_rate_in_cents is not None else 150 * base_unit
            exponent = len(str(base_unit)) - 1
            self._workspaces[workspace_id] = {
                "title": title,
                "archived": False,
                "description": "",
                "due_date": "",
                "effective_due_date": "",
                "start_date": "",
                "budgeted": True,
                "change_orders_enabled": False,
                "updated_at": when,
                "created_at": when,
                "consultant_role_name": "Consultants",
                "client_role_name": "Clients",
                "can_create_line_items": True,
                "default_rate": str(Decimal(rate).scaleb(-exponent)),
                "currency": code,
                "currency_symbol": currency_symbol(code),
                "currency_base_unit": base_unit,
                "can_invite": True,
                "has_budget_access": True,
                "price": "TBD",
                "price_in_cents": None,
                "over_budget": False,
                "id": str(workspace_id),
                "creator_id": str(self.account_user_id),
                "primary_counterpart_id": _sid(client_id),
            }
            return workspace_id

    def add_invoice(
        self,
        *,
        lines: Iterable[Mapping[str, Any]] = (),
        workspace_ids: Iterable[int] | None = None,
        currency: str | None = None,
        tax_rate: Decimal | int | str | None = None,
        draft: bool = False,
        status: str = "new",
        invoice_date: str | None = None,
        due_date: str | None = None,
        payment_schedule: int | None = 30,
        user_invoice_number: int | None = None,
        user_invoice_title: str = "",
        purchase_order: str = "",
        project_code: str = "",
        message: str = "",
        recipient_id: int | None = None,
        user_id: int | None = None,
        balance_in_cents: int | None = None,
        created_at: datetime | None = None,
        updated_at: datetime | None = None,
    ) -> int:
        """Create an invoice with its line items; returns its id.

        Each line is a mapping with `kind` (time_entry, expense, additional_item, fixed_fee_item,
        billing_milestone) and that kind's fields, e.g. `{"kind": "time_entry",
        "time_in_minutes": 90, "rate_in_cents": 15000, "taxable": True}`; `{"kind": ...,
        "id": n}` attaches an existing uninvoiced time entry, expense or billing milestone.
        """
        with self.mutex:
            if status not in STATUSES:
                _fail(422, f"status must be one of {', '.join(STATUSES)}", field="status")
            ws_ids = [int(w) for w in workspace_ids] if workspace_ids is not None else []
            for ws in ws_ids:
                if ws not in self._workspaces:
                    _fail(422, f"workspace {ws} does not exist", field="workspace_ids")
            code = (currency or "").upper()
            if not code:
                code = self._workspaces[ws_ids[0]]["currency"] if ws_ids else "USD"
            try:
                base_unit_for(code)
            except MoneyError:
                _fail(422, f"unknown currency {code}", field="currency")
            if not ws_ids:
                ws_ids = [self._default_workspace(code)]
            now = self.now()
            created = (created_at or now).astimezone(UTC).replace(microsecond=0)
            updated = (updated_at or created).astimezone(UTC).replace(microsecond=0)
            inv_date = invoice_date or created.astimezone(ACCOUNT_TZ).date().isoformat()
            _date_str(inv_date, "invoice_date")
            if payment_schedule is not None:
                payment_schedule = _int(payment_schedule, "payment_schedule", minimum=0)
            if due_date is None:
                due_date = self._due_date(inv_date, payment_schedule)
            number = user_invoice_number
            if number is None:
                number = self._next_number
            self._next_number = max(self._next_number, number + 1)
            if recipient_id is None:
                client = self._workspaces[ws_ids[0]].get("primary_counterpart_id")
                recipient_id = int(client) if client else None
            invoice = _Invoice(
                id=self._next_invoice_id,
                created_at=created,
                updated_at=updated,
                invoice_date=inv_date,
                due_date=due_date,
                payment_schedule=payment_schedule,
                draft=draft,
                status=status,
                user_invoice_number=number,
                user_invoice_title=user_invoice_title,
                purchase_order=purchase_order,
                project_code=project_code,
                message=message,
                tax_rate=_rate(tax_rate),
                currency=code,
                recipient_id=recipient_id,
                user_id=user_id if user_id is not None else self.account_user_id,
                workspace_ids=ws_ids,
                balance_override=balance_in_cents,
            )
            new_lines = [self._make_line(invoice, spec, created) for spec in lines]
            self._next_invoice_id += 1
            self._invoices[invoice.id] = invoice
            for line in new_lines:
                self._attach(invoice, line)
            self._by_id.append(invoice.id)
            self._by_updated.add(_ts(invoice.updated_at), invoice.id)
            self._by_created.add(_ts(invoice.created_at), invoice.id)
            self._by_date.add(invoice.invoice_date, invoice.id)
            return invoice.id

    def update_invoice(self, invoice_id: int, **changes: Any) -> None:
        """Change an invoice as a user would; bumps `updated_at` (or sets `updated_at=`).

        Fields: message, user_invoice_title, purchase_order, project_code, invoice_date,
        due_date, payment_schedule, tax_rate, draft, status, user_invoice_number, recipient_id,
        workspace_ids, currency, balance_in_cents (None = computed). Lines: `lines` (replace
        all), `add_lines`, `remove_line_ids`, `update_lines` ({line_id: {field: value}}).
        """
        with self.mutex:
            invoice = self._invoice_or_404(invoice_id)
            invoice.version += 1
            when = changes.pop("updated_at", None)
            simple_str = ("message", "user_invoice_title", "purchase_order", "project_code")
            for key in simple_str:
                if key in changes:
                    setattr(invoice, key, str(changes.pop(key) or ""))
            if "invoice_date" in changes:
                new_date = _date_str(changes.pop("invoice_date"), "invoice_date")
                self._reindex_date(invoice, new_date)
                invoice.due_date = self._due_date(new_date, invoice.payment_schedule)
            if "payment_schedule" in changes:
                schedule = _int(changes.pop("payment_schedule"), "payment_schedule", optional=True)
                invoice.payment_schedule = schedule
                invoice.due_date = self._due_date(invoice.invoice_date, schedule)
            if "due_date" in changes:
                invoice.due_date = _date_str(changes.pop("due_date"), "due_date", allow_empty=True)
            if "tax_rate" in changes:
                invoice.tax_rate = _rate(changes.pop("tax_rate"))
            if "draft" in changes:
                invoice.draft = bool(changes.pop("draft"))
            if "status" in changes:
                status = changes.pop("status")
                if status not in STATUSES:
                    _fail(422, f"status must be one of {', '.join(STATUSES)}", field="status")
                invoice.status = status
            if "user_invoice_number" in changes:
                invoice.user_invoice_number = _int(
                    changes.pop("user_invoice_number"), "user_invoice_number"
                )
            if "recipient_id" in changes:
                invoice.recipient_id = _int(
                    changes.pop("recipient_id"), "recipient_id", optional=True
                )
            if "workspace_ids" in changes:
                invoice.workspace_ids = [int(w) for w in changes.pop("workspace_ids")]
            if "currency" in changes:
                code = str(changes.pop("currency")).upper()
                base_unit_for(code)
                invoice.currency = code
            if "balance_in_cents" in changes:
                balance = changes.pop("balance_in_cents")
                invoice.balance_override = None if balance is None else int(balance)
            moment = self._moment(when)
            if "lines" in changes:
                for kind in LINE_KINDS:
                    for line_id in list(invoice.lines[kind]):
                        self._detach(invoice, self._lines[line_id])
                for spec in changes.pop("lines"):
                    self._attach(invoice, self._make_line(invoice, spec, moment))
            for line_id in changes.pop("remove_line_ids", ()):
                line = self._lines.get(int(line_id))
                if line is None or line.id not in invoice.lines[line.kind]:
                    _fail(422, f"line {line_id} is not on invoice {invoice.id}", field="lines")
                assert line is not None
                self._detach(invoice, line)
            for spec in changes.pop("add_lines", ()):
                self._attach(invoice, self._make_line(invoice, spec, moment))
            for line_id, line_changes in dict(changes.pop("update_lines", {})).items():
                line = self._lines.get(int(line_id))
                if line is None:
                    _fail(422, f"line {line_id} does not exist", field="lines")
                assert line is not None
                merged = {**line.fields, **dict(line_changes)}
                line.fields = self._line_fields(line.kind, merged, invoice)
                line.rendered = None
                line.updated_at = moment
                self._lines_version += 1
            if changes:
                raise ValueError(f"unknown invoice fields: {', '.join(sorted(changes))}")
            self._touch(invoice, moment)

    def touch(self, invoice_ids: Iterable[int], *, updated_at: datetime | None = None) -> None:
        """Give invoices one identical `updated_at` (a bulk edit), now by default."""
        with self.mutex:
            moment = self._moment(updated_at)
            for invoice_id in invoice_ids:
                self._touch(self._invoice_or_404(invoice_id), moment)

    def cancel(self, invoice_id: int) -> None:
        """Cancel an active invoice (422 for drafts and cancelled ones); bumps `updated_at`."""
        with self.mutex:
            self._cancel(self._invoice_or_404(invoice_id))

    def delete(self, invoice_id: int) -> None:
        """Delete a draft invoice (422 otherwise); its time entries become uninvoiced."""
        with self.mutex:
            self._delete(self._invoice_or_404(invoice_id))

    def corrupt_line(self, invoice_id: int, field_name: str, value: Any) -> int:
        """Give one of the invoice's lines a malformed raw value (e.g. `"12.5"` cents), or
        leave the field out when `value` is `REMOVED`.

        Uses the first line that has the field, else adds a line of a kind that has it.
        `balance_in_cents` keeps the total from before. Bumps `updated_at`; returns the line id.
        """
        with self.mutex:
            invoice = self._invoice_or_404(invoice_id)
            undo = self._undo_for(invoice)
            if invoice.balance_override is None:
                invoice.balance_override = self._totals(invoice)["total"]
            line = next(
                (ln for ln in self._invoice_lines(invoice) if field_name in ln.fields), None
            )
            if line is None:
                kind = next(
                    (k for k, names in _KIND_FIELDS if field_name in names), "additional_item"
                )
                spec: dict[str, Any] = {"kind": kind, "amount_in_cents": 0, "time_in_minutes": 0}
                line = self._make_line(invoice, spec, self.now())
                self._attach(invoice, line)
                undo.lines.setdefault(line.id, None)
            else:
                undo.lines.setdefault(line.id, dict(line.fields))
            line.fields = {**line.fields, field_name: value}
            line.rendered = None
            self._lines_version += 1
            self._touch(invoice, self.now())
            return line.id

    def corrupt_invoice(self, invoice_id: int, field_name: str, value: Any) -> None:
        """Make the API show a malformed raw value for one invoice field (`REMOVED`: leave the
        field out). An id list (`time_entry_ids`, ...) is shown as given even when its lines are
        included, so it may name a line absent from the included map. Bumps `updated_at`."""
        with self.mutex:
            invoice = self._invoice_or_404(invoice_id)
            self._undo_for(invoice)
            invoice.raw_overrides[field_name] = value
            self._touch(invoice, self.now())

    def _undo_for(self, invoice: _Invoice) -> _Undo:
        undo = self._corrupted.get(invoice.id)
        if undo is None:
            undo = _Undo(invoice.balance_override, dict(invoice.raw_overrides))
            self._corrupted[invoice.id] = undo
        return undo

    def uncorrupt(self, invoice_id: int) -> None:
        """Undo every `corrupt_line` and `corrupt_invoice` of the invoice: the fields, lines
        and total are as before the first of them (lines they added are gone). Bumps
        `updated_at`, so the next sync reads the invoice again. 422 if it was not corrupted."""
        with self.mutex:
            invoice = self._invoice_or_404(invoice_id)
            undo = self._corrupted.pop(invoice_id, None)
            if undo is None:
                _fail(422, f"invoice {invoice_id} has no corruption to undo", field="id")
            assert undo is not None
            invoice.raw_overrides = undo.raw_overrides
            for line_id, fields_before in reversed(undo.lines.items()):
                line = self._lines.get(line_id)
                if line is None:
                    continue
                if fields_before is None:
                    self._detach(invoice, line)
                    self._lines.pop(line_id, None)
                else:
                    line.fields = fields_before
                    line.rendered = None
            invoice.balance_override = undo.balance_override
            self._lines_version += 1
            self._touch(invoice, self.now())

    def garble_pages(self, count: int, kind: str = "html") -> None:
        """Answer the next `count` invoice list requests with 200 and a body that is not JSON:
        `html` (a proxy's login page) or `json` (a body cut off mid-way). 0 stops it."""
        if kind not in _GARBLED_PAGES:
            raise ValueError(f"kind must be one of {', '.join(sorted(_GARBLED_PAGES))}")
        if count < 0:
            raise ValueError("count must not be negative")
        with self.mutex:
            self._garble = (kind, count) if count else None

    def set_paging(self, *, max_per_page: int | None = None, page_count_offset: int = 0) -> None:
        """Misbehave on `GET /invoices` as real servers may: serve at most `max_per_page` rows a
        page whatever `per_page` asks for (None: up to 200), and report a `meta.page_count`
        off by `page_count_offset` pages (never below 0)."""
        if max_per_page is not None and not 1 <= max_per_page <= 200:
            raise ValueError("max_per_page must be between 1 and 200")
        with self.mutex:
            self._max_per_page = max_per_page
            self._page_count_offset = page_count_offset

    def mark_paid(self, invoice_id: int) -> None:
        """Set status `accepted payment`; bumps `updated_at`."""
        self.update_invoice(invoice_id, status="accepted payment")

    def invoice_ids(self) -> list[int]:
        """Every invoice id, ascending."""
        with self.mutex:
            return list(self._by_id)

    def invoice_totals(self, invoice_id: int) -> dict[str, int]:
        """subtotal, taxable_subtotal, tax and total of an invoice per money.md."""
        with self.mutex:
            invoice = self._invoice_or_404(invoice_id)
            return self._totals(invoice)

    def external_references(self, invoice_id: int) -> list[dict[str, Any]]:
        """The invoice's external references as the API renders them."""
        with self.mutex:
            by_service = self._refs_by_subject.get(("Invoice", str(invoice_id)), {})
            return [self._render_ref(self._refs[r]) for r in by_service.values()]

    def remove_external_reference(self, invoice_id: int, service_name: str) -> bool:
        """Delete an invoice's reference of one service, as a person in Kantata would. The
        invoice's `updated_at` is left as it is: the docs do not say that removing a reference
        changes the invoice, so the connector must not count on seeing it in a scan."""
        with self.mutex:
            by_service = self._refs_by_subject.get(("Invoice", str(invoice_id)), {})
            ref_id = by_service.pop(service_name, None)
            if ref_id is None:
                return False
            self._refs.pop(ref_id, None)
            invoice = self._invoices.get(int(invoice_id))
            if invoice is not None:
                invoice.rendered = None
            return True

    def state(self) -> dict[str, Any]:
        """Every invoice with lines, totals and references, plus workspaces, users and stats."""
        with self.mutex:
            return self._state(None, include_invoices=True)

    def invoice_state(self, invoice_id: int) -> dict[str, Any]:
        """One invoice as in `state()`."""
        with self.mutex:
            return self._invoice_state(self._invoice_or_404(invoice_id))

    # ===== internals: model ================================================================
    def _moment(self, when: datetime | None) -> datetime:
        if when is None:
            return self.now()
        if when.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return when.astimezone(UTC).replace(microsecond=0)

    def _default_workspace(self, code: str) -> int:
        if code not in self._default_workspaces:
            self._default_workspaces[code] = self.add_workspace(
                f"Sandbox project ({code})", currency=code
            )
        return self._default_workspaces[code]

    @staticmethod
    def _due_date(invoice_date: str, schedule: int | None) -> str:
        parsed = parse_date(invoice_date)
        if parsed is None or schedule is None:
            return ""
        return (parsed + timedelta(days=schedule)).isoformat()

    def _invoice_or_404(self, invoice_id: int | str) -> _Invoice:
        try:
            key = int(invoice_id)
        except (TypeError, ValueError):
            key = -1
        invoice = self._invoices.get(key)
        if invoice is None:
            _fail(404, "Not found", kind="system")
        assert invoice is not None
        return invoice

    def _line_fields(self, kind: str, spec: Mapping[str, Any], invoice: _Invoice) -> dict[str, Any]:
        default_date = invoice.invoice_date
        result: dict[str, Any]
        if kind == "time_entry":
            result = {
                "date_performed": _date_str(
                    spec.get("date_performed", default_date), "date_performed"
                ),
                "time_in_minutes": _int(spec.get("time_in_minutes"), "time_in_minutes", minimum=0),
                "rate_in_cents": _int(spec.get("rate_in_cents", 0), "rate_in_cents", minimum=0),
                "billable": bool(spec.get("billable", True)),
                "taxable": bool(spec.get("taxable", False)),
                "notes": spec.get("notes", ""),
                "story_id": _sid(_int(spec.get("story_id"), "story_id", optional=True)),
                "user_id": str(_int(spec.get("user_id", self.account_user_id), "user_id")),
                "role_id": _sid(_int(spec.get("role_id"), "role_id", optional=True)),
            }
        elif kind == "expense":
            result = {
                "date": _date_str(spec.get("date", default_date), "date"),
                "amount_in_cents": _int(spec.get("amount_in_cents"), "amount_in_cents"),
                "category": str(spec.get("category", "Other")),
                "notes": spec.get("notes", ""),
                "is_billable": bool(spec.get("is_billable", True)),
                "taxable": bool(spec.get("taxable", False)),
                "reimbursable": bool(spec.get("reimbursable", False)),
                "vendor_id": _sid(_int(spec.get("vendor_id"), "vendor_id", optional=True)),
                "user_id": str(_int(spec.get("user_id", self.account_user_id), "user_id")),
            }
        elif kind in ("additional_item", "fixed_fee_item"):
            result = {
                "amount_in_cents": _int(spec.get("amount_in_cents"), "amount_in_cents"),
                "notes": spec.get("notes", ""),
            }
            if spec.get("taxable") is not None:
                result["taxable"] = bool(spec["taxable"])
            if kind == "fixed_fee_item":
                result["story_id"] = _sid(_int(spec.get("story_id"), "story_id", optional=True))
        elif kind == "billing_milestone":
            result = {
                "title": str(spec.get("title", "Milestone")),
                "amount_in_cents": _int(spec.get("amount_in_cents"), "amount_in_cents"),
                "billing_type": str(spec.get("billing_type", "fixed_fee")),
                "date_to_invoice": _date_str(
                    spec.get("date_to_invoice", default_date), "date_to_invoice"
                ),
                "taxable": bool(spec.get("taxable", False)),
                "story_id": _sid(_int(spec.get("story_id"), "story_id", optional=True)),
            }
        else:
            _fail(422, f"unknown line kind {kind!r}", field="kind")
        return result

    def _make_line(self, invoice: _Invoice, spec: Mapping[str, Any], when: datetime) -> _Line:
        kind = str(spec.get("kind", ""))
        if kind in COLLECTION.values():
            kind = KIND_OF_COLLECTION[kind]
        if kind not in LINE_KINDS:
            _fail(422, f"line kind must be one of {', '.join(LINE_KINDS)}", field="kind")
        if spec.get("id") is not None:
            existing = self._lines.get(int(spec["id"]))
            if existing is None or existing.kind != kind or kind not in STANDALONE_KINDS:
                _fail(422, f"no attachable {kind} {spec['id']}", field=IDS_FIELD[kind])
            assert existing is not None
            self._check_attachable(existing, invoice)
            return existing
        workspace_id = int(spec.get("workspace_id", invoice.workspace_ids[0]))
        if workspace_id not in self._workspaces:
            _fail(422, f"workspace {workspace_id} does not exist", field="workspace_id")
        line = _Line(
            id=self._next_line_id,
            kind=kind,
            workspace_id=workspace_id,
            currency=invoice.currency,
            created_at=when,
            updated_at=when,
            fields=self._line_fields(kind, spec, invoice),
        )
        self._next_line_id += 1
        self._lines[line.id] = line
        return line

    def _check_attachable(self, line: _Line, invoice: _Invoice) -> None:
        if line.invoice_id is not None and line.invoice_id != invoice.id:
            other = self._invoices.get(line.invoice_id)
            if other is not None and other.status != "cancelled":
                _fail(
                    422,
                    f"{line.kind} {line.id} is already on invoice {other.id}",
                    field=IDS_FIELD[line.kind],
                )

    def _attach(self, invoice: _Invoice, line: _Line) -> None:
        ids = invoice.lines[line.kind]
        if line.id not in ids:
            ids.append(line.id)
        line.invoice_id = invoice.id
        line.rendered = None

    def _detach(self, invoice: _Invoice, line: _Line) -> None:
        ids = invoice.lines[line.kind]
        if line.id in ids:
            ids.remove(line.id)
        if line.kind in STANDALONE_KINDS:
            if line.invoice_id == invoice.id:
                line.invoice_id = None
                line.rendered = None
        else:
            self._lines.pop(line.id, None)

    def _touch(self, invoice: _Invoice, when: datetime) -> None:
        self._by_updated.remove(_ts(invoice.updated_at), invoice.id)
        invoice.updated_at = when
        invoice.version += 1
        self._by_updated.add(_ts(when), invoice.id)

    def _reindex_date(self, invoice: _Invoice, new_date: str) -> None:
        self._by_date.remove(invoice.invoice_date, invoice.id)
        invoice.invoice_date = new_date
        self._by_date.add(new_date, invoice.id)

    def _cancel(self, invoice: _Invoice) -> None:
        if invoice.draft:
            _fail(422, "Draft invoices cannot be cancelled; delete them instead")
        if invoice.status == "cancelled":
            _fail(422, "This invoice has already been cancelled")
        invoice.status = "cancelled"
        for kind in STANDALONE_KINDS:
            for line_id in invoice.lines[kind]:
                line = self._lines[line_id]
                if line.invoice_id == invoice.id:
                    line.invoice_id = None
                    line.rendered = None
        self._touch(invoice, self.now())

    def _delete(self, invoice: _Invoice) -> None:
        if not invoice.draft:
            _fail(422, "Active invoices cannot be deleted. They must be cancelled instead.")
        for kind in LINE_KINDS:
            for line_id in list(invoice.lines[kind]):
                self._detach(invoice, self._lines[line_id])
        for ref_id in self._refs_by_subject.pop(("Invoice", str(invoice.id)), {}).values():
            self._refs.pop(ref_id, None)
        del self._invoices[invoice.id]
        self._by_id.remove(invoice.id)
        self._by_updated.remove(_ts(invoice.updated_at), invoice.id)
        self._by_created.remove(_ts(invoice.created_at), invoice.id)
        self._by_date.remove(invoice.invoice_date, invoice.id)
        self._totals_cache.pop(invoice.id, None)

    def _invoice_lines(self, invoice: _Invoice) -> Iterable[_Line]:
        for kind in LINE_KINDS:
            for line_id in invoice.lines[kind]:
                yield self._lines[line_id]

    def _totals(self, invoice: _Invoice) -> dict[str, int]:
        cached = self._totals_cache.get(invoice.id)
        if cached is not None and cached[0] == invoice.version and cached[1] == self._lines_version:
            return cached[2]
        try:
            result = totals(
                ((ln.kind, ln.fields) for ln in self._invoice_lines(invoice)), invoice.tax_rate
            )
        except (ValueError, TypeError, ArithmeticError):  # a corrupted line: see corrupt_line
            result = {"subtotal": 0, "taxable_subtotal": 0, "tax": 0, "total": 0}
        self._totals_cache[invoice.id] = (invoice.version, self._lines_version, result)
        return result

    def _balance(self, invoice: _Invoice) -> int:
        if invoice.balance_override is not None:
            return invoice.balance_override
        return self._totals(invoice)["total"]

    def _has_ref(self, invoice: _Invoice, service_name: str | None = None) -> bool:
        refs = self._refs_by_subject.get(("Invoice", str(invoice.id)))
        if not refs:
            return False
        return service_name is None or service_name in refs

    # ----- external references ------------------------------------------------------------
    def upsert_external_reference(self, data: Mapping[str, Any]) -> int:
        """Create or update the one reference per (subject, service_name); returns its id."""
        with self.mutex:
            return self._upsert_ref(data)

    def _upsert_ref(self, data: Mapping[str, Any]) -> int:
        for key in ("subject_type", "subject_id", "service_name"):
            if data.get(key) in (None, ""):
                _fail(422, f"{key} is required", field=key)
        subject_type = str(data["subject_type"])
        subject_id = str(data["subject_id"])
        service_name = str(data["service_name"])
        invoice: _Invoice | None = None
        if subject_type == "Invoice":
            invoice = self._invoices.get(int(subject_id)) if subject_id.isdigit() else None
            if invoice is None:
                _fail(422, f"Invoice {subject_id} does not exist", field="subject_id")
        status = data.get("status")
        if status is not None and status not in REF_STATUSES:
            _fail(422, "status must be one of pending, successful, failed", field="status")
        if "locked" in data and not isinstance(data["locked"], bool | None):
            _fail(422, "locked must be a boolean", field="locked")
        now = self.now()
        by_service = self._refs_by_subject.setdefault((subject_type, subject_id), {})
        ref_id = by_service.get(service_name)
        if ref_id is None:
            for key in ("service_model", "service_model_ref"):
                if data.get(key) in (None, ""):
                    _fail(422, f"{key} is required", field=key)
            ref_id = self._next_ref_id
            self._next_ref_id += 1
            self._refs[ref_id] = {
                "id": ref_id,
                "subject_type": subject_type,
                "subject_id": subject_id,
                "service_name": service_name,
                "service_model": None,
                "service_model_ref": None,
                "status": None,
                "external_message": None,
                "external_link": None,
                "external_status": None,
                "locked": False,
                "last_synced_at": None,
                "created_at": now,
                "updated_at": now,
            }
            by_service[service_name] = ref_id
        ref = self._refs[ref_id]
        for key in ("service_model", "external_message", "external_link", "external_status"):
            if key in data:
                ref[key] = None if data[key] is None else str(data[key])
        if data.get("service_model_ref") is not None:
            ref["service_model_ref"] = str(data["service_model_ref"])
        if status is not None:
            ref["status"] = status
        if data.get("locked") is not None:
            ref["locked"] = bool(data["locked"])
        ref["last_synced_at"] = now
        ref["updated_at"] = now
        if invoice is not None:
            self._touch(invoice, now)
        return ref_id

    def _render_ref(self, ref: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": str(ref["id"]),
            "subject_id": ref["subject_id"],
            "subject_type": ref["subject_type"],
            "service_model_ref": ref["service_model_ref"],
            "service_name": ref["service_name"],
            "service_model": ref["service_model"],
            "status": ref["status"],
            "external_message": ref["external_message"],
            "external_link": ref["external_link"],
            "external_status": ref["external_status"],
            "locked": ref["locked"],
            "last_synced_at": _fmt(ref["last_synced_at"]) if ref["last_synced_at"] else None,
            "created_at": _fmt(ref["created_at"]),
            "updated_at": _fmt(ref["updated_at"]),
        }

    # ===== rendering ===========================================================================
    def _render_invoice(self, invoice: _Invoice, includes: frozenset[str]) -> dict[str, Any]:
        cached = invoice.rendered
        if cached is not None and cached[0] == invoice.version and cached[1] == self._lines_version:
            base = cached[2]
        else:
            base = self._render_invoice_base(invoice)
            invoice.rendered = (invoice.version, self._lines_version, base)
        if not includes:
            return base
        data = dict(base)
        for kind in LINE_KINDS:
            if COLLECTION[kind] in includes:
                data[IDS_FIELD[kind]] = [str(i) for i in invoice.lines[kind]]
        if "external_references" in includes:
            refs = self._refs_by_subject.get(("Invoice", str(invoice.id)), {})
            data["external_reference_ids"] = [str(r) for r in refs.values()]
        if invoice.raw_overrides:
            _apply_raw(
                data, {k: v for k, v in invoice.raw_overrides.items() if k in _ID_LIST_FIELDS}
            )
        return data

    def _render_invoice_base(self, invoice: _Invoice) -> dict[str, Any]:
        base_unit = base_unit_for(invoice.currency)
        number = invoice.user_invoice_number
        data: dict[str, Any] = {
            "created_at": _fmt(invoice.created_at),
            "updated_at": _fmt(invoice.updated_at),
            "invoice_date": invoice.invoice_date,
            "due_date": invoice.due_date,
            "status": invoice.status,
            "title": f"{'Draft ' if invoice.draft else ''}Invoice #{number:05d}",
            "user_invoice_number": number,
            "user_invoice_title": invoice.user_invoice_title,
            "tax_rate": _render_rate(invoice.tax_rate),
            "purchase_order": invoice.purchase_order,
            "project_code": invoice.project_code,
            "message": invoice.message,
            "draft": invoice.draft,
            "payment_schedule": invoice.payment_schedule,
            "balance_in_cents": self._balance(invoice),
            "currency": invoice.currency,
            "currency_symbol": currency_symbol(invoice.currency),
            "currency_base_unit": base_unit,
            "recipient_id": _sid(invoice.recipient_id),
            "user_id": str(invoice.user_id),
            "workspace_ids": [str(w) for w in invoice.workspace_ids],
            "id": str(invoice.id),
        }
        _apply_raw(data, invoice.raw_overrides)
        return data

    def _render_line(self, line: _Line) -> dict[str, Any]:
        if line.rendered is None:
            line.rendered = self._render_line_uncached(line)
        return line.rendered

    def _render_line_uncached(self, line: _Line) -> dict[str, Any]:
        base_unit = base_unit_for(line.currency)
        fields = line.fields
        data: dict[str, Any] = {"created_at": _fmt(line.created_at)}
        if line.kind in STANDALONE_KINDS:
            data["updated_at"] = _fmt(line.updated_at)
        data.update(fields)
        data["currency"] = line.currency
        if line.kind in ("time_entry", "expense"):
            data["currency_symbol"] = currency_symbol(line.currency)
            data["currency_base_unit"] = base_unit
            data["user_can_edit"] = False
            data["is_invoiced"] = line.invoice_id is not None
        if line.kind in STANDALONE_KINDS:
            data["invoice_id"] = _sid(line.invoice_id)
        else:
            data["creator_id"] = str(self.account_user_id)
        data["id"] = str(line.id)
        if line.kind not in LINES_WITHOUT_WORKSPACE:
            data["workspace_id"] = str(line.workspace_id)
        if any(value is REMOVED for value in fields.values()):
            _apply_raw(data, {k: v for k, v in fields.items() if v is REMOVED})
        return data

    def _envelope(
        self,
        key: str,
        ids: list[str],
        records: dict[str, dict[str, Any]],
        *,
        count: int,
        page: int,
        per_page: int,
        extra: dict[str, dict[str, dict[str, Any]]] | None = None,
        meta: bool = True,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "count": count,
            "results": [{"key": key, "id": i} for i in ids],
            # Keys in string order: a client must read the order from `results`, never here.
            key: {k: records[k] for k in sorted(records)},
        }
        if extra:
            payload.update(extra)
        if meta:
            payload["meta"] = {
                "count": count,
                "page_count": math.ceil(count / per_page) if per_page else 0,
                "page_number": page,
                "page_size": per_page,
            }
        return payload

    def _invoices_payload(
        self,
        page_ids: list[int],
        includes: frozenset[str],
        *,
        count: int,
        page: int,
        per_page: int,
    ) -> dict[str, Any]:
        invoices = [self._invoices[i] for i in page_ids]
        records = {str(inv.id): self._render_invoice(inv, includes) for inv in invoices}
        extra: dict[str, dict[str, dict[str, Any]]] = {}
        for kind in LINE_KINDS:
            collection = COLLECTION[kind]
            if collection in includes:
                side: dict[str, dict[str, Any]] = {}
                for inv in invoices:
                    for line_id in inv.lines[kind]:
                        side[str(line_id)] = self._render_line(self._lines[line_id])
                extra[collection] = side
        if "workspaces" in includes:
            extra["workspaces"] = {
                str(w): dict(self._workspaces[w]) for inv in invoices for w in inv.workspace_ids
            }
        if "user" in includes or "recipient" in includes:
            users: dict[str, dict[str, Any]] = {}
            for inv in invoices:
                if "user" in includes and inv.user_id in self._users:
                    users[str(inv.user_id)] = dict(self._users[inv.user_id])
                if "recipient" in includes and inv.recipient_id in self._users:
                    assert inv.recipient_id is not None
                    users[str(inv.recipient_id)] = dict(self._users[inv.recipient_id])
            extra["users"] = users
        if "external_references" in includes:
            refs: dict[str, dict[str, Any]] = {}
            for inv in invoices:
                for ref_id in self._refs_by_subject.get(("Invoice", str(inv.id)), {}).values():
                    refs[str(ref_id)] = self._render_ref(self._refs[ref_id])
            extra["external_references"] = refs
        return self._envelope(
            "invoices",
            [str(i) for i in page_ids],
            records,
            count=count,
            page=page,
            per_page=per_page,
            extra=extra,
        )

    def _invoice_state(self, invoice: _Invoice) -> dict[str, Any]:
        data = self._render_invoice(
            invoice, frozenset(COLLECTION.values()) | {"external_references"}
        )
        data["lines"] = [
            {
                "kind": line.kind,
                **self._render_line(line),
                "workspace_id": str(line.workspace_id),
                "amount_in_minor": _safe_amount(line),
            }
            for line in self._invoice_lines(invoice)
        ]
        data["external_references"] = [
            self._render_ref(self._refs[r])
            for r in self._refs_by_subject.get(("Invoice", str(invoice.id)), {}).values()
        ]
        data["totals"] = self._totals(invoice)
        return data

    def _state(self, only: set[int] | None, *, include_invoices: bool) -> dict[str, Any]:
        invoices: list[dict[str, Any]] = []
        if include_invoices:
            ids = self._by_id if only is None else [i for i in self._by_id if i in only]
            invoices = [self._invoice_state(self._invoices[i]) for i in ids]
        return {
            "now": _fmt(self.now()),
            "clock_frozen": self.clock.frozen,
            "invoice_count": len(self._invoices),
            "invoices": invoices,
            "workspaces": [dict(w) for w in self._workspaces.values()],
            "users": [dict(u) for u in self._users.values()],
            "external_payments": list(self._payments.values()),
            "faults": self.injector.config.to_json(),
            "stats": self.stats.snapshot(),
        }

    # ===== HTTP: errors, auth, routes ========================================================
    def error(self, status: int, message: str, **extra: Any) -> Response:
        """Kantata's error body: `{"errors": [{"type", "message"}]}`."""
        kind = extra.get("kind") or ("system" if status >= 500 or status == 404 else "validation")
        return Response.json(status, {"errors": [{"type": kind, "message": message}]})

    def rate_limited_response(self, retry_after: bool) -> Response:
        """429 with Kantata's JSON error (and `Retry-After: 1` when asked)."""
        response = self.error(
            429,
            "Rate limit exceeded. Please retry your request after a small delay.",
            kind="system",
        )
        if retry_after:
            response.headers.append(("Retry-After", "1"))
        return response

    def add_token(self, token: str, *, financial: bool = True) -> None:
        """Accept another bearer token; without financial permission invoices answer 403."""
        with self.mutex:
            self._tokens[token] = financial

    def check_request(self, request: Request) -> Response | None:
        """`Authorization: Bearer <token>` or 401 (type oauth); 403 without financial access."""
        auth = request.header("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        financial = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if financial is None:
            return self.error(401, "Invalid OAuth 2 Request", kind="oauth")
        if not financial and not request.path.rstrip("/").endswith(("/users/me", "/users/me.json")):
            return self.error(
                403,
                "You must have financial permissions in this project to view its invoices",
                kind="authorization",
            )
        return None

    def _register_routes(self) -> None:
        add = self.router.add
        add(Route("GET", "/invoices", self._http_list_invoices))
        add(Route("GET", "/invoices/{id}", self._http_get_invoice))
        add(Route("PUT", "/invoices/{id}", self._http_update_invoice, creating=True))
        add(Route("PUT", "/invoices/{id}/cancel", self._http_cancel, creating=True))
        add(Route("DELETE", "/invoices/{id}", self._http_delete))
        add(Route("GET", "/external_references", self._http_list_refs))
        add(
            Route(
                "POST",
                "/external_references/create_or_update",
                self._http_upsert_ref,
                creating=True,
            )
        )
        add(Route("DELETE", "/external_references/{id}", self._http_delete_ref))
        add(Route("POST", "/external_payments", self._http_external_payment, creating=True))
        add(Route("GET", "/users/me", self._http_me))
        add(Route("GET", "/workspaces", self._http_list_workspaces))
        add(Route("GET", "/workspaces/{id}", self._http_get_workspace))
        admin = self.admin.add
        admin(Route("POST", "/invoices", self._admin_add_invoice))
        admin(Route("GET", "/invoices/{id}", self._admin_get_invoice))
        admin(Route("PATCH", "/invoices/{id}", self._admin_update_invoice))
        admin(Route("POST", "/invoices/{id}/cancel", self._admin_cancel))
        admin(Route("DELETE", "/invoices/{id}", self._admin_delete))
        admin(Route("POST", "/touch", self._admin_touch))
        admin(Route("POST", "/tokens", self._admin_add_token))
        admin(Route("POST", "/invoices/{id}/corrupt", self._admin_corrupt))
        admin(Route("DELETE", "/invoices/{id}/corrupt", self._admin_uncorrupt))
        admin(Route("POST", "/garble", self._admin_garble))
        admin(Route("POST", "/paging", self._admin_paging))
        admin(Route("POST", "/workspaces", self._admin_add_workspace))
        admin(Route("POST", "/users", self._admin_add_user))
        admin(Route("POST", "/generate", self._admin_generate))

    # ----- query parsing -------------------------------------------------------------------
    @staticmethod
    def _page_params(query: Mapping[str, str]) -> tuple[int, int]:
        def positive(name: str, default: int) -> int:
            raw = query.get(name)
            if raw is None or raw == "":
                return default
            if not raw.strip().isdigit():
                _fail(400, f"{name} must be a positive integer", field=name)
            value = int(raw)
            return value if value > 0 else default

        return positive("page", 1), min(positive("per_page", 20), 200)

    @staticmethod
    def _includes(query: Mapping[str, str]) -> frozenset[str]:
        raw = query.get("include") or ""
        names = frozenset(n.strip() for n in raw.split(",") if n.strip())
        unknown = names - INCLUDES
        if unknown:
            _fail(400, f"Invalid include: {', '.join(sorted(unknown))}", field="include")
        return names

    @staticmethod
    def _time_filter(query: Mapping[str, str], name: str) -> float | None:
        raw = query.get(name)
        if raw is None or raw == "":
            return None
        parsed = parse_timestamp(raw, ACCOUNT_TZ)
        if parsed is None:
            _fail(400, f"{name} is not a valid ISO 8601 datetime: {raw!r}", field=name)
        assert parsed is not None
        return parsed.timestamp()

    def _query_invoice_ids(self, query: Mapping[str, str]) -> list[int]:
        """Ids matching the filters, in the requested order."""
        order = query.get("order") or "created_at:desc"
        if order not in ORDERS:
            _fail(400, f"Invalid order: {order}", field="order")
        order_key, direction = order.split(":")
        updated_after = self._time_filter(query, "updated_after")
        updated_before = self._time_filter(query, "updated_before")
        created_after = self._time_filter(query, "created_after")
        created_before = self._time_filter(query, "created_before")
        invoices = self._invoices

        # 1. A candidate list from the best index (already in that index's order).
        source = order_key
        ids: list[int]
        if updated_after is not None or updated_before is not None:
            source = "updated_at"
            ids = self._by_updated.between(updated_after, updated_before)
            updated_after = updated_before = None
        elif created_after is not None or created_before is not None:
            source = "created_at"
            ids = self._by_created.between(created_after, created_before)
            created_after = created_before = None
        elif order_key == "updated_at":
            ids = list(self._by_updated.ids)
        elif order_key == "created_at":
            ids = list(self._by_created.ids)
        elif order_key == "invoice_date":
            ids = list(self._by_date.ids)
        else:
            ids = list(self._by_id)

        # 2. The remaining filters.
        predicates: list[Callable[[_Invoice], bool]] = []
        if created_after is not None:
            after_c = created_after
            predicates.append(lambda inv: inv.created_at.timestamp() > after_c)
        if created_before is not None:
            before_c = created_before
            predicates.append(lambda inv: inv.created_at.timestamp() < before_c)
        only = query.get("only")
        if only is not None:
            wanted = {int(p) for p in only.split(",") if p.strip().isdigit()}
            ids = [i for i in ids if i in wanted]
        if parse_bool(query.get("without_drafts")):
            predicates.append(lambda inv: not inv.draft)
        if parse_bool(query.get("paid")):
            predicates.append(lambda inv: inv.status == "accepted payment")
        if parse_bool(query.get("pending")):
            predicates.append(lambda inv: inv.status != "accepted payment" and not inv.draft)
        workspace = query.get("workspace_id")
        if workspace:
            spaces = {int(p) for p in workspace.split(",") if p.strip().isdigit()}
            predicates.append(lambda inv: any(w in spaces for w in inv.workspace_ids))
        numbers = query.get("user_invoice_number")
        if numbers:
            wanted_numbers = {int(p) for p in numbers.split(",") if p.strip().isdigit()}
            predicates.append(lambda inv: inv.user_invoice_number in wanted_numbers)
        has_refs = parse_bool(query.get("has_external_references"))
        if has_refs is not None:
            predicates.append(lambda inv: self._has_ref(inv) is has_refs)
        without = query.get("without_external_reference_service_name")
        if without:
            predicates.append(lambda inv: not self._has_ref(inv, without))
        with_service = query.get("external_reference_service_name")
        ref_status = query.get("external_reference_status")
        if with_service or ref_status:
            predicates.append(lambda inv: self._ref_matches(inv, with_service, ref_status))
        if len(predicates) == 1:
            single = predicates[0]
            ids = [i for i in ids if single(invoices[i])]
        elif predicates:

            def matches(inv: _Invoice) -> bool:
                return all(p(inv) for p in predicates)

            ids = [i for i in ids if matches(invoices[i])]

        # 3. The requested order.
        if source != order_key:
            if order_key == "id":
                ids.sort()
            elif order_key == "created_at":
                ids.sort(key=lambda i: (invoices[i].created_at, i))
            elif order_key == "updated_at":
                ids.sort(key=lambda i: (invoices[i].updated_at, i))
            else:
                ids.sort(key=lambda i: (invoices[i].invoice_date, i))
        if direction == "desc":
            ids.reverse()
        return ids

    def _ref_matches(self, invoice: _Invoice, service: str | None, status: str | None) -> bool:
        refs = self._refs_by_subject.get(("Invoice", str(invoice.id)), {})
        for name, ref_id in refs.items():
            if service and name != service:
                continue
            if status and self._refs[ref_id]["status"] != status:
                continue
            return True
        return False

    # ----- handlers ------------------------------------------------------------------------
    def _http_list_invoices(self, request: Request, params: dict[str, str]) -> Response:
        if self._garble is not None:
            kind, left = self._garble
            self._garble = (kind, left - 1) if left > 1 else None
            self.garbled += 1
            content_type, body = _GARBLED_PAGES[kind]
            return Response(200, body, content_type=content_type, fault=f"garbled-{kind}")
        query = request.query
        page, per_page = self._page_params(query)
        if self._max_per_page is not None:
            per_page = min(per_page, self._max_per_page)
        includes = self._includes(query)
        ids = self._query_invoice_ids(query)
        page_ids = ids[(page - 1) * per_page : page * per_page]
        payload = self._invoices_payload(
            page_ids, includes, count=len(ids), page=page, per_page=per_page
        )
        if self._page_count_offset:
            meta = payload["meta"]
            meta["page_count"] = max(meta["page_count"] + self._page_count_offset, 0)
        return Response.json(200, payload)

    def _single(self, invoice: _Invoice, request: Request) -> Response:
        includes = self._includes(request.query)
        return Response.json(
            200, self._invoices_payload([invoice.id], includes, count=1, page=1, per_page=20)
        )

    def _http_get_invoice(self, request: Request, params: dict[str, str]) -> Response:
        return self._single(self._invoice_or_404(params["id"]), request)

    @staticmethod
    def _body_object(request: Request, root: str) -> dict[str, Any]:
        try:
            data = loads(request.body) if request.body.strip() else None
        except (ValueError, UnicodeDecodeError):
            _fail(400, "Request body is not valid JSON", kind="syntax")
        if isinstance(data, dict) and isinstance(data.get(root), dict):
            return dict(data[root])
        return _fail(
            400,
            f"Missing required parameters: {root}. Please see our documentation.",
            kind="syntax",
        )

    def _http_update_invoice(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._invoice_or_404(params["id"])
        body = self._body_object(request, "invoice")
        ref = body.pop("external_reference", None)
        if ref is not None and not isinstance(ref, dict):
            _fail(422, "external_reference must be an object", field="external_reference")
        # Validate everything before changing anything.
        plan: dict[str, list[_Line]] = {}
        for kind in STANDALONE_KINDS:
            key = IDS_FIELD[kind]
            if key not in body:
                continue
            raw = body.pop(key)
            if not isinstance(raw, list):
                _fail(422, f"{key} must be an array", field=key)
            chosen: list[_Line] = []
            for value in raw:
                line = self._lines.get(_int(value, key))
                if line is None or line.kind != kind:
                    _fail(422, f"{kind} {value} does not exist", field=key)
                assert line is not None
                self._check_attachable(line, invoice)
                chosen.append(line)
            plan[kind] = chosen
        if plan:
            remaining = sum(
                len(plan[k]) if k in plan else len(invoice.lines[k]) for k in LINE_KINDS
            )
            if remaining == 0:
                _fail(
                    422,
                    "At least one time entry, expense, fixed fee item, additional item, or "
                    "billing milestone must be on the invoice",
                )
        changes: dict[str, Any] = {}
        for key in (
            "payment_schedule",
            "invoice_date",
            "user_invoice_number",
            "draft",
            "message",
            "user_invoice_title",
            "purchase_order",
            "project_code",
            "tax_rate",
        ):
            if key in body:
                changes[key] = body.pop(key)
        if ref is not None:
            ref_data = {**ref, "subject_type": "Invoice", "subject_id": str(invoice.id)}
            self._validate_ref(ref_data)
            if self._has_ref(invoice, str(ref.get("service_name"))):
                # The documents describe the nested reference for adding one ("the
                # service_name must be unique"), not what a second one of a service does.
                _fail(
                    422,
                    "external_reference.service_name has already been taken: if you are adding "
                    "multiple external references to the same object, the service_name must be "
                    "unique",
                    field="service_name",
                )
        # Apply (field changes first: they are the only part that can still be refused).
        if changes:
            self.update_invoice(invoice.id, **changes)
        for kind, chosen in plan.items():
            keep = {line.id for line in chosen}
            for line_id in list(invoice.lines[kind]):
                if line_id not in keep:
                    self._detach(invoice, self._lines[line_id])
            invoice.lines[kind] = []
            for line in chosen:
                self._attach(invoice, line)
            invoice.version += 1
        if ref is not None:
            self._upsert_ref({**ref, "subject_type": "Invoice", "subject_id": str(invoice.id)})
        self._touch(invoice, self.now())
        return self._single(invoice, request)

    def _validate_ref(self, data: Mapping[str, Any]) -> None:
        for key in ("service_name", "service_model", "service_model_ref"):
            if data.get(key) in (None, ""):
                existing = self._refs_by_subject.get(
                    (str(data["subject_type"]), str(data["subject_id"])), {}
                )
                if key != "service_name" and str(data.get("service_name")) in existing:
                    continue
                _fail(422, f"external_reference.{key} is required", field=key)
        status = data.get("status")
        if status is not None and status not in REF_STATUSES:
            _fail(422, "status must be one of pending, successful, failed", field="status")

    def _http_cancel(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._invoice_or_404(params["id"])
        self._cancel(invoice)
        return self._single(invoice, request)

    def _http_delete(self, request: Request, params: dict[str, str]) -> Response:
        self._delete(self._invoice_or_404(params["id"]))
        return Response.empty(204)

    def _http_list_refs(self, request: Request, params: dict[str, str]) -> Response:
        query = request.query
        page, per_page = self._page_params(query)
        subject_type = query.get("subject_type")
        subject_ids = {p.strip() for p in (query.get("subject_id") or "").split(",") if p.strip()}
        service_name = query.get("service_name")
        status = query.get("status")
        matches = [
            ref
            for ref in self._refs.values()
            if (not subject_type or ref["subject_type"] == subject_type)
            and (not subject_ids or ref["subject_id"] in subject_ids)
            and (not service_name or ref["service_name"] == service_name)
            and (not status or ref["status"] == status)
        ]
        matches.sort(key=lambda r: int(r["id"]))
        chosen = matches[(page - 1) * per_page : page * per_page]
        records = {str(r["id"]): self._render_ref(r) for r in chosen}
        payload = self._envelope(
            "external_references",
            [str(r["id"]) for r in chosen],
            records,
            count=len(matches),
            page=page,
            per_page=per_page,
        )
        return Response.json(200, payload)

    def _http_upsert_ref(self, request: Request, params: dict[str, str]) -> Response:
        try:
            data = loads(request.body) if request.body.strip() else None
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("external_reference"), dict):
            data = data["external_reference"]
        if not isinstance(data, dict) or any(
            data.get(k) in (None, "")
            for k in (
                "subject_type",
                "subject_id",
                "service_name",
                "service_model",
                "service_model_ref",
            )
        ):
            _fail(
                400,
                "Missing required parameters. Please see our documentation at "
                "http://developer.mavenlink.com",
                kind="syntax",
            )
        assert isinstance(data, dict)
        subject = (str(data["subject_type"]), str(data["subject_id"]))
        existing = self._refs_by_subject.get(subject, {}).get(str(data["service_name"]))
        if existing is not None:
            current = self._refs[existing]
            if (current["service_model"], current["service_model_ref"]) != (
                str(data["service_model"]),
                str(data["service_model_ref"]),
            ):
                # Whether the upsert re-points a reference at another object, or adds a second
                # one of the same service, is not documented: refused, so that a client must
                # delete the old reference first.
                _fail(
                    422,
                    f"an external reference of {data['service_name']} on this subject already "
                    f"names {current['service_model']} {current['service_model_ref']}: the "
                    "service_name must be unique",
                    field="service_model_ref",
                )
        ref_id = self._upsert_ref(data)
        record = self._render_ref(self._refs[ref_id])
        payload = {
            "count": 1,
            "results": [{"key": "external_references", "id": str(ref_id)}],
            "external_references": {str(ref_id): record},
        }
        return Response.json(200, payload)

    def _http_delete_ref(self, request: Request, params: dict[str, str]) -> Response:
        ref_id = int(params["id"]) if params["id"].isdigit() else -1
        ref = self._refs.pop(ref_id, None)
        if ref is None:
            _fail(404, "Not found", kind="system")
        assert ref is not None
        by_service = self._refs_by_subject.get((ref["subject_type"], ref["subject_id"]), {})
        if by_service.get(ref["service_name"]) == ref_id:
            del by_service[ref["service_name"]]
        if ref["subject_type"] == "Invoice" and str(ref["subject_id"]).isdigit():
            invoice = self._invoices.get(int(ref["subject_id"]))
            if invoice is not None:
                self._touch(invoice, self.now())
        return Response.empty(204)

    def _http_external_payment(self, request: Request, params: dict[str, str]) -> Response:
        data = self._body_object(request, "external_payment")
        invoice = self._invoice_or_404(_int(data.get("invoice_id"), "invoice_id"))
        workspace_id = _int(data.get("workspace_id"), "workspace_id")
        if len(invoice.workspace_ids) != 1 or workspace_id != invoice.workspace_ids[0]:
            _fail(422, "External payments need a single-project invoice and its workspace")
        if invoice.draft or invoice.status != "new":
            _fail(422, "Only pending, non-draft invoices can receive an external payment")
        now = self.now()
        payment_id = self._next_payment_id
        self._next_payment_id += 1
        record = {
            "id": str(payment_id),
            "invoice_id": str(invoice.id),
            "workspace_id": str(workspace_id),
            # A payment naming an invoice settles its whole balance: amount_in_cents is
            # ignored (as Kantata does), so a partial payment cannot be recorded this way.
            "amount_in_cents": self._balance(invoice),
            "currency": invoice.currency,
            "created_at": _fmt(now),
            "updated_at": _fmt(now),
        }
        self._payments[payment_id] = record
        invoice.status = "accepted payment"
        self._touch(invoice, now)
        payload = {
            "count": 1,
            "results": [{"key": "external_payments", "id": str(payment_id)}],
            "external_payments": {str(payment_id): record},
        }
        return Response.json(200, payload)

    def _http_me(self, request: Request, params: dict[str, str]) -> Response:
        user = dict(self._users[self.account_user_id])
        payload = self._envelope(
            "users", [user["id"]], {user["id"]: user}, count=1, page=1, per_page=20
        )
        return Response.json(200, payload)

    def _http_list_workspaces(self, request: Request, params: dict[str, str]) -> Response:
        page, per_page = self._page_params(request.query)
        ids = sorted(self._workspaces)
        only = request.query.get("only")
        if only:
            wanted = {int(p) for p in only.split(",") if p.strip().isdigit()}
            ids = [i for i in ids if i in wanted]
        chosen = ids[(page - 1) * per_page : page * per_page]
        records = {str(i): dict(self._workspaces[i]) for i in chosen}
        payload = self._envelope(
            "workspaces",
            [str(i) for i in chosen],
            records,
            count=len(ids),
            page=page,
            per_page=per_page,
        )
        return Response.json(200, payload)

    def _http_get_workspace(self, request: Request, params: dict[str, str]) -> Response:
        key = int(params["id"]) if params["id"].isdigit() else -1
        if key not in self._workspaces:
            _fail(404, "Not found", kind="system")
        record = dict(self._workspaces[key])
        payload = self._envelope(
            "workspaces", [record["id"]], {record["id"]: record}, count=1, page=1, per_page=20
        )
        return Response.json(200, payload)

    # ----- admin handlers ------------------------------------------------------------------
    @staticmethod
    def _admin_datetimes(body: dict[str, Any]) -> dict[str, Any]:
        for key in ("created_at", "updated_at"):
            if body.get(key) is not None:
                parsed = parse_timestamp(str(body[key]), ACCOUNT_TZ)
                if parsed is None:
                    raise ValueError(f"{key} is not an ISO 8601 timestamp")
                body[key] = parsed
        return body

    def _admin_add_invoice(self, request: Request, params: dict[str, str]) -> Response:
        body = self._admin_datetimes(self.admin_body(request))
        invoice_id = self.add_invoice(**body)
        with self.mutex:
            return Response.json(201, {"id": invoice_id, "invoice": self.invoice_state(invoice_id)})

    def _admin_get_invoice(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(200, self.invoice_state(int(params["id"])))

    def _admin_update_invoice(self, request: Request, params: dict[str, str]) -> Response:
        body = self._admin_datetimes(self.admin_body(request))
        self.update_invoice(int(params["id"]), **body)
        return Response.json(200, self.invoice_state(int(params["id"])))

    def _admin_cancel(self, request: Request, params: dict[str, str]) -> Response:
        self.cancel(int(params["id"]))
        return Response.json(200, self.invoice_state(int(params["id"])))

    def _admin_delete(self, request: Request, params: dict[str, str]) -> Response:
        self.delete(int(params["id"]))
        return Response.empty(204)

    def _admin_corrupt(self, request: Request, params: dict[str, str]) -> Response:
        body = self.admin_body(request)
        invoice_id = int(params["id"])
        value = REMOVED if body.get("remove") is True else body.get("value")
        if body.get("target", "line") == "invoice":
            self.corrupt_invoice(invoice_id, str(body["field"]), value)
            return Response.json(200, self.invoice_state(invoice_id))
        line_id = self.corrupt_line(invoice_id, str(body["field"]), value)
        return Response.json(200, {"line_id": line_id, "invoice": self.invoice_state(invoice_id)})

    def _admin_uncorrupt(self, request: Request, params: dict[str, str]) -> Response:
        self.uncorrupt(int(params["id"]))
        return Response.json(200, self.invoice_state(int(params["id"])))

    def _admin_garble(self, request: Request, params: dict[str, str]) -> Response:
        body = self.admin_body(request)
        count = body.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError("count must be an integer")
        kind = str(body.get("kind", "html"))
        self.garble_pages(count, kind)
        return Response.json(200, {"count": count, "kind": kind, "garbled": self.garbled})

    def _admin_paging(self, request: Request, params: dict[str, str]) -> Response:
        """`POST /_sandbox/paging {"max_per_page": 100, "page_count_offset": -1}`; `{}` resets."""
        body = self.admin_body(request)
        cap = body.get("max_per_page")
        offset = body.get("page_count_offset", 0)
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int)):
            raise ValueError("max_per_page must be an integer or null")
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise ValueError("page_count_offset must be an integer")
        self.set_paging(max_per_page=cap, page_count_offset=offset)
        return Response.json(200, {"max_per_page": cap, "page_count_offset": offset})

    def _admin_add_token(self, request: Request, params: dict[str, str]) -> Response:
        body = self.admin_body(request)
        self.add_token(str(body["token"]), financial=bool(body.get("financial", True)))
        return Response.json(201, {"token": body["token"]})

    def _admin_touch(self, request: Request, params: dict[str, str]) -> Response:
        body = self._admin_datetimes(self.admin_body(request))
        ids = [int(i) for i in body.get("ids", [])]
        self.touch(ids, updated_at=body.get("updated_at"))
        return Response.json(
            200, {"ids": ids, "updated_at": _fmt(self._moment(body.get("updated_at")))}
        )

    def _admin_add_workspace(self, request: Request, params: dict[str, str]) -> Response:
        body = self.admin_body(request)
        workspace_id = self.add_workspace(
            str(body["title"]),
            currency=str(body.get("currency", "USD")),
            client_id=body.get("client_id"),
        )
        return Response.json(201, {"id": workspace_id})

    def _admin_add_user(self, request: Request, params: dict[str, str]) -> Response:
        body = self.admin_body(request)
        user_id = self.add_user(str(body["full_name"]), str(body["email_address"]))
        return Response.json(201, {"id": user_id})

    def _admin_generate(self, request: Request, params: dict[str, str]) -> Response:
        from sandbox.data import generate

        body = self.admin_body(request)
        before = set(self.invoice_ids())
        generate(self, **body)
        created = [i for i in self.invoice_ids() if i not in before]
        return Response.json(201, {"ids": created, "count": len(created)})

    def state_response(self, request: Request) -> Response:
        """`GET /_sandbox/state[?only=1,2][&invoices=false]`."""
        only_raw = request.query.get("only")
        only = {int(p) for p in only_raw.split(",") if p.strip().isdigit()} if only_raw else None
        include = parse_bool(request.query.get("invoices"))
        with self.mutex:
            return Response.json(200, self._state(only, include_invoices=include is not False))
