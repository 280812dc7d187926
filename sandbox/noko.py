"""A fake Noko v2 API: projects, entries, expenses and invoices with money.md's totals.

Bodies are bare JSON objects, lists are bare JSON arrays paged with a `Link` header, amounts
are JSON numbers carrying exactly the currency's decimals (JPY 0, USD 2, KWD 3), timestamps
are UTC `...Z`. Errors are `{"message": ..., "errors": [{"resource", "field", "code"}]}`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn

from sandbox._core import (
    ApiFailure,
    Request,
    Response,
    Route,
    Service,
    loads,
    page_link_query,
    parse_bool,
    parse_date,
    parse_timestamp,
)
from sandbox._money import (
    MoneyError,
    currency_symbol,
    exponent_for,
    format_with_currency,
    minor_to_major,
    parse_decimal,
    round_minor,
)
from sandbox.faults import FaultConfig

__all__ = ["INVOICE_STATES", "FakeNoko", "NokoTotals"]

INVOICE_STATES = ("unpaid", "awaiting_payment", "in_progress", "paid")
CALCULATION_METHODS = ("standard_hourly_rate", "custom_hourly_rates", "flat_rate")
BILLING_INCREMENTS = (1, 5, 6, 10, 15, 20, 30, 60)
DETAIL_STRINGS = (
    "reference",
    "project_name",
    "company_name",
    "company_details",
    "recipient_details",
    "description",
    "footer",
)
SHOW_FLAGS = {
    "show_hours_worked": True,
    "show_full_report": False,
    "show_user_summaries": False,
    "show_project_summaries": False,
    "show_project_name_for_expenses": False,
}
CUSTOMIZATION_DEFAULTS: dict[str, Any] = {
    "title": "Invoice",
    "date": "Date",
    "project": "Project",
    "reference": "Invoice reference",
    "total_due": "Total amount due",
    "summary": "Summary",
    "project_summary": "Project summary",
    "user_summary": "People summary",
    "no_project_name": "No project",
    "work_time": "work time",
    "no_tax": "no tax",
    "work_total": "Total worked",
    "total": "TOTAL",
    "report": "Report",
    "locale": "en-US",
    "currency_code": "USD",
    "currency_symbol": "$",
    "taxable_total": "Total taxable",
    "tax_total": "Total tax",
    "taxfree_total": "Total taxfree",
    "total_report": "TOTAL",
    "custom_html": None,
    "allow_paypal_invoice": False,
    "paypal_invoice_title": None,
    "paypal_currency_code": "USD",
    "paypal_address": None,
    "allow_stripe_connect_payment": False,
    "stripe_connect_payment_description": None,
    "stripe_connect_currency_code": "usd",
    "currency_name": "United States dollar",
}
CURRENCY_NAMES = {
    "USD": "United States dollar",
    "EUR": "Euro",
    "GBP": "Pound sterling",
    "JPY": "Japanese yen",
    "KWD": "Kuwaiti dinar",
    "BHD": "Bahraini dinar",
    "CAD": "Canadian dollar",
    "AUD": "Australian dollar",
}
_LOCALE = re.compile(r"^[a-z]{2}(-[A-Z]{2})?$")
# A hashtag: "#" then a word, not inside a word ("a#b" is no tag). The docs say only that
# "any tags or hashtags will be automatically parsed"; their example entry reads "noko" with
# the tag "#noko", so the sandbox gives the description back without the "#" of each hashtag.
_HASHTAG = re.compile(r"(?<![\w#])#([^\W_][\w-]*)")


def parse_hashtags(description: str) -> tuple[str, list[str]]:
    """(the description as Noko gives it back, the tag names) of an entry's description."""
    tags = list(dict.fromkeys(m.group(1) for m in _HASHTAG.finditer(description)))
    return _HASHTAG.sub(lambda m: m.group(1), description), tags


_TWO_PLACES = Decimal("0.01")
_TRAILING_NUMBER = re.compile(r"^(?P<prefix>.*?)(?P<number>[0-9]+)$")


def _fmt(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fail(message: str, *errors: tuple[str, str, str], status: int = 400) -> NoReturn:
    payload: dict[str, Any] = {"message": message}
    if errors:
        payload["errors"] = [{"resource": r, "field": f, "code": c} for r, f, c in errors]
    raise ApiFailure(Response.json(status, payload))


def _not_found(resource: str) -> NoReturn:
    _fail(f"{resource} not found", status=404)


@dataclass
class _Project:
    id: int
    name: str
    billing_increment: int
    billable: bool
    color: str
    created_at: datetime
    updated_at: datetime
    enabled: bool = True


@dataclass
class _Entry:
    id: int
    date: str
    user_id: int
    minutes: int
    description: str
    project_id: int | None
    billable: bool
    created_at: datetime
    updated_at: datetime
    source_url: str | None = None
    invoice_id: int | None = None
    invoiced_at: datetime | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class _Expense:
    id: int
    date: str
    user_id: int
    price: Decimal
    taxable: bool
    description: str
    project_id: int
    created_at: datetime
    updated_at: datetime
    invoice_id: int | None = None


@dataclass
class _Tax:
    id: int
    name: str | None
    percentage: Decimal


@dataclass
class _RateCalculation:
    method: str = "standard_hourly_rate"
    standard_hourly_rate: Decimal | None = None
    custom_hourly_rates: list[tuple[int, Decimal]] = field(default_factory=list)
    flat_rate: Decimal | None = None


@dataclass
class _Invoice:
    id: int
    invoice_date: str
    reference: str
    details: dict[str, str]
    flags: dict[str, bool]
    customization: dict[str, Any]
    rate: _RateCalculation
    created_at: datetime
    updated_at: datetime
    share_token: str
    state: str = "unpaid"
    locked: bool = False
    taxes: list[_Tax] = field(default_factory=list)
    entry_ids: list[int] = field(default_factory=list)
    expense_ids: list[int] = field(default_factory=list)
    payment: dict[str, Any] | None = None
    version: int = 0

    @property
    def currency(self) -> str:
        return str(self.customization["currency_code"])


@dataclass(frozen=True)
class NokoTotals:
    """An invoice's amounts in minor units of its currency, and that currency's exponent."""

    exponent: int
    entries: int
    expenses: int
    taxable: int
    taxfree: int
    taxes: tuple[int, ...]
    tax_total: int
    total: int

    def major(self, minor: int) -> Decimal:
        """Minor units -> Decimal with the currency's decimals."""
        return minor_to_major(minor, self.exponent)


class FakeNoko(Service):
    """The fake Noko v2 server's state and request handling (base path `/v2`)."""

    name = "noko"
    base_path = "/v2"

    def __init__(
        self,
        *,
        token: str = "sandbox-noko-token",  # noqa: S107 - the sandbox's fixed token
        faults: FaultConfig | None = None,
        rate_limit: float | None = None,
        burst: int = 5,
    ) -> None:
        super().__init__(faults=faults, rate_limit=rate_limit, burst=burst)
        self.token = token
        self.public_url = "http://127.0.0.1/v2"
        self.share_root: str | None = None
        """Where the people's pages (`share_url`) live; None: the API's own host. Fixed in
        replays that must give the same links on any port."""
        self._projects: dict[int, _Project] = {}
        self._entries: dict[int, _Entry] = {}
        self._expenses: dict[int, _Expense] = {}
        self._invoices: dict[int, _Invoice] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._totals_cache: dict[int, tuple[int, NokoTotals]] = {}
        self._project_entries: dict[int, set[int]] = {}
        self._project_expenses: dict[int, set[int]] = {}
        self._next = {"project": 37_001, "entry": 1_711_001, "expense": 2_201, "invoice": 26_601}
        self._next_tax = 88_201
        self._reference_seq = 0
        self._skew: tuple[int, frozenset[str]] = (0, frozenset())
        self.account_user_id = self.add_user("Sandbox", "Owner", "owner@sandbox.example", 5538)
        self._register_routes()

    # ===== in-process admin API ==============================================================
    def now(self) -> datetime:
        """The fake's current time (aware UTC, whole seconds)."""
        return self.clock.now()

    def _id(self, kind: str) -> int:
        value = self._next[kind]
        self._next[kind] = value + 1
        return value

    def add_user(
        self, first_name: str, last_name: str, email: str, user_id: int | None = None
    ) -> int:
        """Create an account user (entries and custom hourly rates refer to users)."""
        with self.mutex:
            uid = user_id if user_id is not None else max(self._users, default=5537) + 1
            self._users[uid] = {
                "id": uid,
                "email": email,
                "first_name": first_name,
                "last_name": last_name,
                "profile_image_url": "https://api.nokotime.com/images/avatars/default.png",
            }
            return uid

    def add_project(self, name: str, *, billing_increment: int = 15, billable: bool = True) -> int:
        """Create a project; returns its id."""
        with self.mutex:
            return self._create_project(name, billing_increment, billable).id

    def add_expense(
        self,
        *,
        project_id: int,
        price: Decimal | int | str,
        date: str | None = None,
        taxable: bool = True,
        description: str = "",
    ) -> int:
        """Create an uninvoiced expense; returns its id."""
        with self.mutex:
            return self._create_expense(
                {
                    "project_id": project_id,
                    "price": price if not isinstance(price, int) else Decimal(price),
                    "date": date or self.now().date().isoformat(),
                    "taxable": taxable,
                    "description": description,
                }
            ).id

    def set_invoice_state(self, invoice_id: int, state: str) -> None:
        """Put an invoice into a state (paid records a payment; other states clear it)."""
        with self.mutex:
            invoice = self._invoice_or_404(invoice_id)
            if state not in INVOICE_STATES:
                raise ValueError(f"state must be one of {', '.join(INVOICE_STATES)}")
            self._set_state(invoice, state, payment_method="manual")

    def lock(self, invoice_id: int, locked: bool = True) -> None:
        """Lock an invoice as while it is being paid (edits get 400 `locked`)."""
        with self.mutex:
            invoice = self._invoice_or_404(invoice_id)
            invoice.locked = locked
            self._changed(invoice)

    def edit_invoice(self, invoice_id: int, **changes: Any) -> None:
        """Edit an invoice by hand, as a person in Noko's UI would; bumps `updated_at`.

        Detail fields and `customization` / `rate_calculation` as in the API, plus `taxes`
        (replace), `add_taxes`, `remove_tax_ids`, `add_expenses` (new expenses: price,
        description, taxable, project_id, date), `add_expense_ids`, `remove_expense_ids`,
        `add_entry_ids`, `remove_entry_ids`, `state`, `locked`. Paid and locked invoices can be
        edited here (a person can unlock them first).
        """
        with self.mutex:
            invoice = self._invoice_or_404(invoice_id)
            body = dict(changes)
            state = body.pop("state", None)
            locked = body.pop("locked", None)
            taxes = body.pop("taxes", None)
            add_taxes = body.pop("add_taxes", None)
            remove_tax_ids = body.pop("remove_tax_ids", None)
            add_expenses = body.pop("add_expenses", None)
            add_expense_ids = body.pop("add_expense_ids", None)
            remove_expense_ids = body.pop("remove_expense_ids", None)
            add_entry_ids = body.pop("add_entry_ids", None)
            remove_entry_ids = body.pop("remove_entry_ids", None)
            unknown = (
                set(body)
                - set(DETAIL_STRINGS)
                - set(SHOW_FLAGS)
                - {
                    "invoice_date",
                    "customization",
                    "rate_calculation",
                }
            )
            if unknown:
                raise ValueError(f"unknown invoice fields: {', '.join(sorted(unknown))}")
            self._apply_details(invoice, body, creating=False)
            if taxes is not None:
                invoice.taxes = self._parse_taxes(taxes)
            if add_taxes is not None:
                invoice.taxes.extend(self._parse_taxes(add_taxes))
            if remove_tax_ids is not None:
                drop = {int(t) for t in remove_tax_ids}
                invoice.taxes = [t for t in invoice.taxes if t.id not in drop]
            for spec in add_expenses or ():
                data = dict(spec)
                data.setdefault("date", invoice.invoice_date)
                if "project_id" not in data:
                    data["project_id"] = self._default_project_for(invoice)
                expense = self._create_expense(data)
                self._attach_expenses(invoice, [expense.id])
            if add_expense_ids:
                self._attach_expenses(invoice, [int(i) for i in add_expense_ids])
            if remove_expense_ids:
                self._detach_expenses(invoice, {int(i) for i in remove_expense_ids})
            if add_entry_ids:
                self._attach_entries(invoice, [int(i) for i in add_entry_ids])
            if remove_entry_ids:
                self._detach_entries(invoice, {int(i) for i in remove_entry_ids})
            if locked is not None:
                invoice.locked = bool(locked)
            if state is not None:
                if state not in INVOICE_STATES:
                    raise ValueError(f"state must be one of {', '.join(INVOICE_STATES)}")
                self._set_state(invoice, state, payment_method="manual")
            self._changed(invoice)

    def delete_invoice(self, invoice_id: int) -> None:
        """Delete an invoice behind the connector's back (even paid or locked)."""
        with self.mutex:
            self._delete_invoice(self._invoice_or_404(invoice_id))

    def delete_expense(self, expense_id: int) -> None:
        """Delete an expense behind the connector's back (leaving its invoice if on one)."""
        with self.mutex:
            expense = self._expenses.get(expense_id) or _not_found("Expense")
            if expense.invoice_id is not None and expense.invoice_id in self._invoices:
                self._detach_expenses(self._invoices[expense.invoice_id], {expense.id})
            self._drop_expense(expense)

    def delete_entry(self, entry_id: int) -> None:
        """Delete an entry behind the connector's back (leaving its invoice if on one)."""
        with self.mutex:
            entry = self._entries.get(entry_id) or _not_found("Entry")
            if entry.invoice_id is not None and entry.invoice_id in self._invoices:
                self._detach_entries(self._invoices[entry.invoice_id], {entry.id})
            self._drop_entry(entry)

    def delete_project(self, project_id: int) -> None:
        """Delete a project with its entries and expenses, behind the connector's back."""
        with self.mutex:
            project = self._projects.get(project_id) or _not_found("Project")
            for entry in [self._entries[i] for i in self._project_entries.get(project.id, ())]:
                self.delete_entry(entry.id)
            for expense in [self._expenses[i] for i in self._project_expenses.get(project.id, ())]:
                self.delete_expense(expense.id)
            del self._projects[project.id]

    def skew_totals(self, minor: int, references: Iterable[str] = ()) -> None:
        """A Noko whose arithmetic is not money.md's: invoices with these references (every
        invoice when none is given) get a `total_amount` `minor` minor units off. 0 stops it."""
        with self.mutex:
            self._skew = (int(minor), frozenset(references))
            self._totals_cache.clear()

    def invoice_totals(self, invoice_id: int) -> NokoTotals:
        """The invoice's computed amounts (minor units)."""
        with self.mutex:
            return self._totals(self._invoice_or_404(invoice_id))

    def render_invoice(self, invoice_id: int) -> dict[str, Any]:
        """The invoice exactly as `GET /invoices/{id}` returns it (Decimal amounts)."""
        with self.mutex:
            return self._render_invoice(self._invoice_or_404(invoice_id))

    def invoices(self) -> list[dict[str, Any]]:
        """Every invoice as the API renders it, by id."""
        with self.mutex:
            return [self._render_invoice(i) for _, i in sorted(self._invoices.items())]

    def state(self) -> dict[str, Any]:
        """Projects, entries, expenses, invoices (with totals and item ids) and stats."""
        with self.mutex:
            invoices = []
            for _, invoice in sorted(self._invoices.items()):
                data = self._render_invoice(invoice)
                data["entry_ids"] = list(invoice.entry_ids)
                data["expense_ids"] = list(invoice.expense_ids)
                data["locked"] = invoice.locked
                invoices.append(data)
            return {
                "now": _fmt(self.now()),
                "projects": [self._render_project(p, full=True) for p in self._projects.values()],
                "entries": [self._render_entry(e) for e in self._entries.values()],
                "expenses": [self._render_expense(e) for e in self._expenses.values()],
                "invoices": invoices,
                "users": [self._render_user(u) for u in self._users],
                "faults": self.injector.config.to_json(),
                "rate_limit": (
                    {"rate": self.limiter.rate, "burst": self.limiter.burst}
                    if self.limiter
                    else None
                ),
                "stats": self.stats.snapshot(),
            }

    # ===== model internals ===================================================================
    def _stamp(self, previous: datetime | None) -> datetime:
        """Now, but strictly after `previous`: `updated_at` changes on every change."""
        now = self.now()
        if previous is not None and now <= previous:
            return previous + timedelta(seconds=1)
        return now

    def _changed(self, invoice: _Invoice) -> None:
        invoice.version += 1
        invoice.updated_at = self._stamp(invoice.updated_at)

    def _invoice_or_404(self, invoice_id: int | str) -> _Invoice:
        try:
            key = int(invoice_id)
        except (TypeError, ValueError):
            key = -1
        return self._invoices.get(key) or _not_found("Invoice")

    def _create_project(self, name: str, increment: int, billable: bool) -> _Project:
        name = name.strip()
        if not name:
            _fail("Project could not be created", ("Project", "name", "missing_field"))
        if any(p.name.lower() == name.lower() for p in self._projects.values()):
            _fail("Project could not be created", ("Project", "name", "already_exists"))
        if increment not in BILLING_INCREMENTS:
            _fail("Project could not be created", ("Project", "billing_increment", "invalid"))
        now = self.now()
        colors = ("#ff9898", "#ffc898", "#fffa98", "#98ff9c", "#98e6ff", "#b598ff")
        project = _Project(
            id=self._id("project"),
            name=name,
            billing_increment=increment,
            billable=billable,
            color=colors[len(self._projects) % len(colors)],
            created_at=now,
            updated_at=now,
        )
        self._projects[project.id] = project
        return project

    def _user_id(self, value: Any, resource: str) -> int:
        if value is None:
            return self.account_user_id
        if isinstance(value, bool) or not isinstance(value, int) or value not in self._users:
            _fail(f"{resource} could not be saved", (resource, "user_id", "missing"))
        return int(value)

    def _create_expense(
        self, data: Mapping[str, Any], *, replacing: _Expense | None = None
    ) -> _Expense:
        """Validate and store an expense (a new one, or `replacing` an existing one's fields)."""
        errors: list[tuple[str, str, str]] = []
        date = data.get("date")
        if date is None:
            errors.append(("Expense", "date", "missing_field"))
        elif parse_date(date) is None:
            errors.append(("Expense", "date", "invalid"))
        project_id = data.get("project_id")
        if project_id is None:
            errors.append(("Expense", "project_id", "missing_field"))
        elif not isinstance(project_id, int) or project_id not in self._projects:
            errors.append(("Expense", "project_id", "missing"))
        price = None
        if data.get("price") is None:
            errors.append(("Expense", "price", "missing_field"))
        else:
            price = parse_decimal(data["price"])
            if price is None:
                errors.append(("Expense", "price", "invalid"))
        taxable = data.get("taxable", True)
        if not isinstance(taxable, bool):
            errors.append(("Expense", "taxable", "invalid"))
        if errors:
            _fail("Expense could not be saved", *errors)
        assert price is not None
        assert isinstance(project_id, int)
        user_id = self._user_id(data.get("user_id"), "Expense")
        now = self.now()
        expense = _Expense(
            id=replacing.id if replacing else self._id("expense"),
            date=str(date),
            user_id=user_id,
            price=price,
            taxable=bool(taxable),
            description=str(data.get("description") or ""),
            project_id=project_id,
            created_at=replacing.created_at if replacing else now,
            updated_at=self._stamp(replacing.updated_at) if replacing else now,
        )
        self._store_expense(expense)
        return expense

    def _store_entry(self, entry: _Entry) -> None:
        self._entries[entry.id] = entry
        if entry.project_id is not None:
            self._project_entries.setdefault(entry.project_id, set()).add(entry.id)

    def _drop_entry(self, entry: _Entry) -> None:
        self._entries.pop(entry.id, None)
        if entry.project_id is not None:
            self._project_entries.get(entry.project_id, set()).discard(entry.id)

    def _store_expense(self, expense: _Expense) -> None:
        previous = self._expenses.get(expense.id)
        if previous is not None:
            self._project_expenses.get(previous.project_id, set()).discard(previous.id)
        self._expenses[expense.id] = expense
        self._project_expenses.setdefault(expense.project_id, set()).add(expense.id)

    def _drop_expense(self, expense: _Expense) -> None:
        self._expenses.pop(expense.id, None)
        self._project_expenses.get(expense.project_id, set()).discard(expense.id)

    def _entry_pool(self, query: Mapping[str, str]) -> Iterable[_Entry]:
        """The entries a list filter has to look at: narrowed by project or invoice ids."""
        project_ids = self._id_set(query, "project_ids")
        if project_ids is not None:
            ids = set().union(*(self._project_entries.get(p, set()) for p in project_ids))
            return [self._entries[i] for i in ids]
        invoice_ids = self._id_set(query, "invoice_ids")
        if invoice_ids is not None:
            found = [self._invoices[i] for i in invoice_ids if i in self._invoices]
            return [self._entries[e] for inv in found for e in inv.entry_ids if e in self._entries]
        return self._entries.values()

    def _expense_pool(self, query: Mapping[str, str]) -> Iterable[_Expense]:
        """The expenses a list filter has to look at: narrowed by project or invoice ids."""
        project_ids = self._id_set(query, "project_ids")
        if project_ids is not None:
            ids = set().union(*(self._project_expenses.get(p, set()) for p in project_ids))
            return [self._expenses[i] for i in ids]
        invoice_ids = self._id_set(query, "invoice_ids")
        if invoice_ids is not None:
            found = [self._invoices[i] for i in invoice_ids if i in self._invoices]
            return [
                self._expenses[e] for inv in found for e in inv.expense_ids if e in self._expenses
            ]
        return self._expenses.values()

    def _default_project_for(self, invoice: _Invoice) -> int:
        for expense_id in invoice.expense_ids:
            return self._expenses[expense_id].project_id
        for entry_id in invoice.entry_ids:
            project_id = self._entries[entry_id].project_id
            if project_id is not None:
                return project_id
        if not self._projects:
            return self._create_project("Sandbox", 15, True).id
        return next(iter(self._projects))

    def _parse_taxes(self, raw: Any, field_name: str = "taxes") -> list[_Tax]:
        if not isinstance(raw, list):
            _fail("Taxes could not be added", ("Tax", field_name, "invalid"))
        taxes: list[_Tax] = []
        errors: list[tuple[str, str, str]] = []
        for index, item in enumerate(raw):
            where = f"{field_name}[{index}].percentage"
            if not isinstance(item, dict):
                errors.append(("Tax", f"{field_name}[{index}]", "invalid"))
                continue
            if item.get("percentage") is None:
                errors.append(("Tax", where, "missing_field"))
                continue
            percentage = parse_decimal(item["percentage"])
            if percentage is None or percentage < 0 or percentage >= 1000:
                errors.append(("Tax", where, "invalid"))
                continue
            if percentage != percentage.quantize(_TWO_PLACES):
                # Noko keeps two decimals (00.00): 8.875 cannot be a tax rate.
                errors.append(("Tax", where, "invalid"))
                continue
            name = item.get("name")
            taxes.append(
                _Tax(
                    id=0,
                    name=None if name is None else str(name),
                    percentage=percentage.quantize(_TWO_PLACES),
                )
            )
        if errors:
            _fail("Taxes could not be added", *errors)
        for tax in taxes:
            tax.id = self._next_tax
            self._next_tax += 1
        return taxes

    def _parse_rate(self, raw: Any, current: _RateCalculation | None) -> _RateCalculation:
        if not isinstance(raw, dict):
            _fail("Invoice could not be saved", ("Invoice", "rate_calculation", "invalid"))
        base = current or _RateCalculation()
        method = raw.get("calculation_method", base.method)
        if method not in CALCULATION_METHODS:
            _fail(
                "Invoice could not be saved",
                ("Invoice", "rate_calculation.calculation_method", "invalid"),
            )

        def money(key: str, default: Decimal | None) -> Decimal | None:
            if key not in raw:
                return default
            if raw[key] is None:
                return None
            value = parse_decimal(raw[key])
            if value is None or value < 0:
                _fail(
                    "Invoice could not be saved", ("Invoice", f"rate_calculation.{key}", "invalid")
                )
            return value

        standard = money("standard_hourly_rate", base.standard_hourly_rate)
        flat = money("flat_rate", base.flat_rate)
        custom = base.custom_hourly_rates
        if "custom_hourly_rates" in raw:
            custom = []
            items = raw["custom_hourly_rates"] or []
            if not isinstance(items, list):
                _fail(
                    "Invoice could not be saved",
                    ("Invoice", "rate_calculation.custom_hourly_rates", "invalid"),
                )
            for index, item in enumerate(items):
                where = f"rate_calculation.custom_hourly_rates[{index}]"
                user = item.get("user_id", item.get("user")) if isinstance(item, dict) else None
                rate = parse_decimal(item.get("hourly_rate")) if isinstance(item, dict) else None
                if isinstance(user, dict):
                    user = user.get("id")
                if not isinstance(user, int) or isinstance(user, bool) or rate is None or rate < 0:
                    _fail("Invoice could not be saved", ("Invoice", where, "invalid"))
                assert isinstance(user, int)
                assert rate is not None
                custom.append((user, rate))
        if method in ("standard_hourly_rate", "custom_hourly_rates") and standard is None:
            _fail(
                "Invoice could not be saved",
                ("Invoice", "rate_calculation.standard_hourly_rate", "missing_field"),
            )
        if method == "flat_rate" and flat is None:
            _fail(
                "Invoice could not be saved",
                ("Invoice", "rate_calculation.flat_rate", "missing_field"),
            )
        return _RateCalculation(method, standard, custom, flat)

    def _parse_customization(self, raw: Any, current: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            _fail("Invoice could not be saved", ("Invoice", "customization", "invalid"))
        result = dict(current)
        for key, value in raw.items():
            if key in CUSTOMIZATION_DEFAULTS and key not in ("created_at", "updated_at"):
                result[key] = value
        code = str(result.get("currency_code") or "USD").upper()
        try:
            exponent_for(code)
        except MoneyError:
            _fail(
                "Invoice could not be saved",
                ("Invoice", "customization.currency_code", "invalid"),
            )
        result["currency_code"] = code
        if "currency_code" in raw and "currency_symbol" not in raw:
            result["currency_symbol"] = currency_symbol(code)
        result["currency_name"] = CURRENCY_NAMES.get(code, code)
        locale = result.get("locale")
        if not isinstance(locale, str) or not _LOCALE.match(locale):
            _fail("Invoice could not be saved", ("Invoice", "locale", "locale_not_available"))
        return result

    def _apply_details(self, invoice: _Invoice, body: Mapping[str, Any], *, creating: bool) -> None:
        """Validate and apply detail fields; nothing changes when anything is invalid."""
        errors: list[tuple[str, str, str]] = []
        invoice_date = body.get("invoice_date", None if creating else invoice.invoice_date)
        if invoice_date is None:
            errors.append(("Invoice", "invoice_date", "missing_field"))
        elif parse_date(invoice_date) is None:
            errors.append(("Invoice", "invoice_date", "invalid"))
        for key in DETAIL_STRINGS:
            if key in body and body[key] is not None and not isinstance(body[key], str):
                errors.append(("Invoice", key, "invalid"))
        for key in SHOW_FLAGS:
            if key in body and not isinstance(body[key], bool):
                errors.append(("Invoice", key, "invalid"))
        if errors:
            _fail("Invoice could not be saved", *errors)
        customization = invoice.customization
        if "customization" in body:
            customization = self._parse_customization(body["customization"], customization)
        rate = invoice.rate
        if "rate_calculation" in body:
            rate = self._parse_rate(body["rate_calculation"], invoice.rate)
        invoice.invoice_date = str(invoice_date)
        for key in DETAIL_STRINGS:
            if key in body:
                value = body[key] if body[key] is not None else ""
                if key == "reference":
                    invoice.reference = value or invoice.reference
                else:
                    invoice.details[key] = value
        for key in SHOW_FLAGS:
            if key in body:
                invoice.flags[key] = bool(body[key])
        invoice.customization = customization
        invoice.rate = rate

    def _check_items(
        self, invoice_id: int | None, entry_ids: Iterable[Any], expense_ids: Iterable[Any]
    ) -> tuple[list[int], list[int], list[tuple[str, str, str]]]:
        errors: list[tuple[str, str, str]] = []
        entries: list[int] = []
        expenses: list[int] = []
        for value in entry_ids:
            entry = self._entries.get(value) if isinstance(value, int) else None
            if entry is None:
                errors.append(("Entry", f"entry_ids[{value}]", "missing"))
            elif entry.invoice_id is not None and entry.invoice_id != invoice_id:
                errors.append(("Entry", f"entry_ids[{value}]", "invoiced"))
            elif entry.id not in entries:
                entries.append(entry.id)
        for value in expense_ids:
            expense = self._expenses.get(value) if isinstance(value, int) else None
            if expense is None:
                errors.append(("Expense", f"expense_ids[{value}]", "missing"))
            elif expense.invoice_id is not None and expense.invoice_id != invoice_id:
                errors.append(("Expense", f"expense_ids[{value}]", "invoiced"))
            elif expense.id not in expenses:
                expenses.append(expense.id)
        return entries, expenses, errors

    def _attach_entries(self, invoice: _Invoice, ids: list[int]) -> None:
        entries, _, errors = self._check_items(invoice.id, ids, ())
        if errors:
            _fail("Entries could not be added", *errors)
        now = self.now()
        for entry_id in entries:
            entry = self._entries[entry_id]
            if entry.invoice_id != invoice.id:
                entry.invoice_id = invoice.id
                entry.invoiced_at = now
                entry.updated_at = self._stamp(entry.updated_at)
                invoice.entry_ids.append(entry_id)

    def _attach_expenses(self, invoice: _Invoice, ids: list[int]) -> None:
        _, expenses, errors = self._check_items(invoice.id, (), ids)
        if errors:
            _fail("Expenses could not be added", *errors)
        for expense_id in expenses:
            expense = self._expenses[expense_id]
            if expense.invoice_id != invoice.id:
                expense.invoice_id = invoice.id
                expense.updated_at = self._stamp(expense.updated_at)
                invoice.expense_ids.append(expense_id)

    def _detach_entries(self, invoice: _Invoice, ids: set[int] | None) -> None:
        keep: list[int] = []
        for entry_id in invoice.entry_ids:
            if ids is None or entry_id in ids:
                entry = self._entries.get(entry_id)
                if entry is not None:
                    entry.invoice_id = None
                    entry.invoiced_at = None
                    entry.updated_at = self._stamp(entry.updated_at)
            else:
                keep.append(entry_id)
        invoice.entry_ids = keep

    def _detach_expenses(self, invoice: _Invoice, ids: set[int] | None) -> None:
        keep: list[int] = []
        for expense_id in invoice.expense_ids:
            if ids is None or expense_id in ids:
                expense = self._expenses.get(expense_id)
                if expense is not None:
                    expense.invoice_id = None
                    expense.updated_at = self._stamp(expense.updated_at)
            else:
                keep.append(expense_id)
        invoice.expense_ids = keep

    def _set_state(self, invoice: _Invoice, state: str, *, payment_method: str) -> None:
        if state == "paid" and invoice.state != "paid":
            invoice.payment = {
                "paid_at": _fmt(self.now()),
                "reference": None,
                "payment_method": payment_method,
            }
        elif state != "paid":
            invoice.payment = None
        invoice.state = state
        self._changed(invoice)

    def _delete_invoice(self, invoice: _Invoice) -> None:
        self._detach_entries(invoice, None)
        self._detach_expenses(invoice, None)
        del self._invoices[invoice.id]
        self._totals_cache.pop(invoice.id, None)

    def _check_editable(self, invoice: _Invoice) -> None:
        if invoice.state == "paid":
            _fail("The invoice has been paid", ("Invoice", "state", "paid"))
        if invoice.locked or invoice.state == "in_progress":
            _fail("The invoice is locked while it is being paid", ("Invoice", "state", "locked"))

    # ----- totals ------------------------------------------------------------------------
    def _totals(self, invoice: _Invoice) -> NokoTotals:
        cached = self._totals_cache.get(invoice.id)
        if cached is not None and cached[0] == invoice.version:
            return cached[1]
        exponent = exponent_for(invoice.currency)
        scale = Decimal(10) ** exponent
        rate = invoice.rate
        entries_minor = 0
        entries = [self._entries[i] for i in invoice.entry_ids if i in self._entries]
        if rate.method == "flat_rate":
            if entries and rate.flat_rate is not None:
                entries_minor = round_minor(rate.flat_rate * scale)
        else:
            custom = dict(rate.custom_hourly_rates) if rate.method == "custom_hourly_rates" else {}
            standard = rate.standard_hourly_rate or Decimal(0)
            for entry in entries:
                hourly = custom.get(entry.user_id, standard)
                entries_minor += round_minor(Decimal(entry.minutes) * hourly * scale / Decimal(60))
        taxable_expenses = 0
        taxfree_expenses = 0
        for expense_id in invoice.expense_ids:
            expense = self._expenses.get(expense_id)
            if expense is None:
                continue
            minor = round_minor(expense.price * scale)
            if expense.taxable:
                taxable_expenses += minor
            else:
                taxfree_expenses += minor
        taxable = entries_minor + taxable_expenses
        taxes = tuple(
            round_minor(Decimal(taxable) * tax.percentage / Decimal(100)) for tax in invoice.taxes
        )
        tax_total = sum(taxes)
        skew, skewed = self._skew
        if skewed and invoice.reference not in skewed:
            skew = 0
        result = NokoTotals(
            exponent=exponent,
            entries=entries_minor,
            expenses=taxable_expenses + taxfree_expenses,
            taxable=taxable,
            taxfree=taxfree_expenses,
            taxes=taxes,
            tax_total=tax_total,
            total=entries_minor + taxable_expenses + taxfree_expenses + tax_total + skew,
        )
        self._totals_cache[invoice.id] = (invoice.version, result)
        return result

    # ===== rendering =========================================================================
    def _url(self, path: str) -> str:
        return f"{self.public_url}{path}"

    def _share_root(self) -> str:
        return self.share_root or self.public_url.rsplit("/v2", 1)[0]

    def _render_user(self, user_id: int) -> dict[str, Any] | None:
        user = self._users.get(user_id)
        if user is None:
            return None
        return {**user, "url": self._url(f"/users/{user_id}")}

    def _render_project(self, project: _Project, *, full: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": project.id,
            "name": project.name,
            "billing_increment": project.billing_increment,
            "enabled": project.enabled,
            "billable": project.billable,
            "color": project.color,
            "url": self._url(f"/projects/{project.id}"),
        }
        if not full:
            return data
        entries = [self._entries[i] for i in self._project_entries.get(project.id, ())]
        expenses = [self._expenses[i] for i in self._project_expenses.get(project.id, ())]
        minutes = sum(e.minutes for e in entries)
        billable = sum(e.minutes for e in entries if e.billable)
        invoiced = sum(e.minutes for e in entries if e.invoice_id is not None)
        invoice_ids = sorted(
            {e.invoice_id for e in entries if e.invoice_id in self._invoices}
            | {e.invoice_id for e in expenses if e.invoice_id in self._invoices}
        )
        data.update(
            {
                "group": None,
                "minutes": minutes,
                "billable_minutes": billable,
                "unbillable_minutes": minutes - billable,
                "invoiced_minutes": invoiced,
                "remaining_minutes": None,
                "budgeted_minutes": None,
                "import": None,
                "invoices": [
                    self._invoice_summary(self._invoices[i]) for i in invoice_ids if i is not None
                ],
                "participants": [self._render_user(self.account_user_id)],
                "entries": len(entries),
                "entries_url": self._url(f"/projects/{project.id}/entries"),
                "expenses": len(expenses),
                "expenses_url": self._url(f"/projects/{project.id}/expenses"),
                "created_at": _fmt(project.created_at),
                "updated_at": _fmt(project.updated_at),
                "merge_url": self._url(f"/projects/{project.id}/merge"),
                "archive_url": self._url(f"/projects/{project.id}/archive"),
                "unarchive_url": self._url(f"/projects/{project.id}/unarchive"),
            }
        )
        return data

    def _invoice_summary(self, invoice: _Invoice) -> dict[str, Any]:
        totals = self._totals(invoice)
        return {
            "id": invoice.id,
            "reference": invoice.reference,
            "invoice_date": invoice.invoice_date,
            "state": invoice.state,
            "total_amount": totals.major(totals.total),
            "url": self._url(f"/invoices/{invoice.id}"),
        }

    def _render_entry(self, entry: _Entry) -> dict[str, Any]:
        project = self._projects.get(entry.project_id) if entry.project_id is not None else None
        invoice = self._invoices.get(entry.invoice_id) if entry.invoice_id is not None else None
        url = self._url(f"/entries/{entry.id}")
        return {
            "id": entry.id,
            "date": entry.date,
            "user": self._render_user(entry.user_id),
            "billable": entry.billable,
            "minutes": entry.minutes,
            "description": entry.description,
            "project": self._render_project(project) if project else None,
            "tags": [
                {
                    "id": self._tag_id(tag),
                    "name": tag,
                    "billable": True,
                    "formatted_name": f"#{tag}",
                    "url": self._url(f"/tags/{self._tag_id(tag)}"),
                }
                for tag in entry.tags
            ],
            "source_url": entry.source_url,
            "invoiced_at": _fmt(entry.invoiced_at) if entry.invoiced_at else None,
            "invoice": self._invoice_summary(invoice) if invoice else None,
            "import": None,
            "approved_at": None,
            "approved_by": None,
            "url": url,
            "invoiced_outside_of_noko_url": f"{url}/marked_as_invoiced",
            "approved_url": f"{url}/approved",
            "unapproved_url": f"{url}/unapproved",
            "created_at": _fmt(entry.created_at),
            "updated_at": _fmt(entry.updated_at),
        }

    @staticmethod
    def _tag_id(name: str) -> int:
        return 249_000 + int(hashlib.sha256(name.lower().encode()).hexdigest()[:6], 16)

    def _render_expense(self, expense: _Expense) -> dict[str, Any]:
        project = self._projects.get(expense.project_id)
        invoice = self._invoices.get(expense.invoice_id) if expense.invoice_id is not None else None
        price = expense.price
        if invoice is not None:
            exponent = exponent_for(invoice.currency)
            if -price.as_tuple().exponent <= exponent:  # type: ignore[operator]
                price = price.quantize(Decimal(1).scaleb(-exponent))
        return {
            "id": expense.id,
            "price": price,
            "description": expense.description,
            "taxable": expense.taxable,
            "date": expense.date,
            "project": self._render_project(project) if project else None,
            "invoice": self._invoice_summary(invoice) if invoice else None,
            "user": self._render_user(expense.user_id),
            "url": self._url(f"/expenses/{expense.id}"),
            "created_at": _fmt(expense.created_at),
            "updated_at": _fmt(expense.updated_at),
        }

    def _render_invoice(self, invoice: _Invoice) -> dict[str, Any]:
        totals = self._totals(invoice)
        code = invoice.currency
        rate = invoice.rate
        project_ids: list[int] = []
        for entry_id in invoice.entry_ids:
            entry = self._entries.get(entry_id)
            if (
                entry is not None
                and entry.project_id is not None
                and entry.project_id not in project_ids
            ):
                project_ids.append(entry.project_id)
        for expense_id in invoice.expense_ids:
            expense = self._expenses.get(expense_id)
            if expense is not None and expense.project_id not in project_ids:
                project_ids.append(expense.project_id)
        amounts = {
            "taxable_amount": totals.major(totals.taxable),
            "taxfree_amount": totals.major(totals.taxfree),
            "tax_total_amount": totals.major(totals.tax_total),
            "total_amount": totals.major(totals.total),
        }
        url = self._url(f"/invoices/{invoice.id}")
        data: dict[str, Any] = {
            "id": invoice.id,
            "state": invoice.state,
            "reference": invoice.reference,
            "invoice_date": invoice.invoice_date,
            **{k: invoice.details.get(k, "") for k in DETAIL_STRINGS if k != "reference"},
            **invoice.flags,
            "customization": {
                **invoice.customization,
                "created_at": _fmt(invoice.created_at),
                "updated_at": _fmt(invoice.updated_at),
            },
            "rate_calculation": {
                "calculation_method": rate.method,
                "standard_hourly_rate": rate.standard_hourly_rate,
                "custom_hourly_rates": [
                    {"user": user, "hourly_rate": hourly}
                    for user, hourly in rate.custom_hourly_rates
                ],
                "flat_rate": rate.flat_rate,
            },
            "taxes": [
                {"id": tax.id, "name": tax.name, "percentage": tax.percentage}
                for tax in invoice.taxes
            ],
            **amounts,
            **{f"{k}_with_currency": format_with_currency(v, code) for k, v in amounts.items()},
            "payment": dict(invoice.payment) if invoice.payment else None,
            "payment_transactions": [],
            "projects": [
                self._render_project(self._projects[p]) for p in project_ids if p in self._projects
            ],
            "entries": len(invoice.entry_ids),
            "entries_url": f"{url}/entries",
            "expenses": len(invoice.expense_ids),
            "expenses_url": f"{url}/expenses",
            "share_url": f"{self._share_root()}/i/{invoice.share_token}",
            "created_at": _fmt(invoice.created_at),
            "updated_at": _fmt(invoice.updated_at),
            "url": url,
        }
        return data

    # ===== HTTP ==============================================================================
    def error(self, status: int, message: str, **extra: Any) -> Response:
        """Noko's error body: `{"message": ...}`."""
        return Response.json(status, {"message": message})

    def rate_limited_response(self, retry_after: bool) -> Response:
        """Noko's 429: an EMPTY body."""
        headers = [("Retry-After", "1")] if retry_after else []
        return Response.empty(429, headers)

    def check_request(self, request: Request) -> Response | None:
        """`User-Agent` is required (400), then `X-NokoToken` (401)."""
        if not (request.header("User-Agent") or "").strip():
            return Response.json(400, {"message": "User-Agent header is required"})
        if request.header("X-NokoToken") != self.token:
            return Response.json(401, {"message": "You must be authenticated to use the API"})
        return None

    def _register_routes(self) -> None:
        add = self.router.add
        add(Route("GET", "/current_user", self._http_current_user))
        add(Route("GET", "/users", self._http_users))
        add(Route("GET", "/projects", self._http_list_projects))
        add(Route("POST", "/projects", self._http_create_project, creating=True))
        add(Route("GET", "/projects/{id}", self._http_get_project))
        add(Route("GET", "/expenses", self._http_list_expenses))
        add(Route("POST", "/expenses", self._http_create_expense, creating=True))
        add(Route("GET", "/expenses/{id}", self._http_get_expense))
        add(Route("PUT", "/expenses/{id}", self._http_update_expense))
        add(Route("DELETE", "/expenses/{id}", self._http_delete_expense))
        add(Route("GET", "/entries", self._http_list_entries))
        add(Route("POST", "/entries", self._http_create_entry, creating=True))
        add(Route("GET", "/entries/{id}", self._http_get_entry))
        add(Route("DELETE", "/entries/{id}", self._http_delete_entry))
        add(Route("GET", "/invoices", self._http_list_invoices))
        add(Route("POST", "/invoices", self._http_create_invoice, creating=True))
        add(Route("GET", "/invoices/{id}", self._http_get_invoice))
        add(Route("PUT", "/invoices/{id}", self._http_update_invoice))
        add(Route("DELETE", "/invoices/{id}", self._http_delete_invoice))
        add(Route("GET", "/invoices/{id}/entries", self._http_invoice_entries))
        add(Route("GET", "/invoices/{id}/expenses", self._http_invoice_expenses))
        for action, handler in (
            ("paid", self._http_paid),
            ("unpaid", self._http_unpaid),
            ("add_entries", self._http_add_entries),
            ("remove_entries", self._http_remove_entries),
            ("remove_all_entries", self._http_remove_all_entries),
            ("add_expenses", self._http_add_expenses),
            ("remove_expenses", self._http_remove_expenses),
            ("remove_all_expenses", self._http_remove_all_expenses),
            ("add_taxes", self._http_add_taxes),
            ("remove_taxes", self._http_remove_taxes),
            ("remove_all_taxes", self._http_remove_all_taxes),
        ):
            add(Route("PUT", f"/invoices/{{id}}/{action}", handler))
        admin = self.admin.add
        admin(Route("POST", "/invoices/{id}/state", self._admin_state))
        admin(Route("POST", "/invoices/{id}/lock", self._admin_lock))
        admin(Route("PATCH", "/invoices/{id}", self._admin_edit))
        admin(Route("DELETE", "/invoices/{id}", self._admin_delete("invoice")))
        admin(Route("DELETE", "/expenses/{id}", self._admin_delete("expense")))
        admin(Route("DELETE", "/entries/{id}", self._admin_delete("entry")))
        admin(Route("DELETE", "/projects/{id}", self._admin_delete("project")))
        admin(Route("POST", "/projects", self._admin_add_project))
        admin(Route("POST", "/expenses", self._admin_add_expense))
        admin(Route("POST", "/users", self._admin_add_user))

    # ----- request helpers -------------------------------------------------------------
    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        if not request.body.strip():
            return {}
        try:
            data = loads(request.body)
        except (ValueError, UnicodeDecodeError):
            _fail("JSON Parsing Error")
        if not isinstance(data, dict):
            _fail("Body should be JSON Hash")
        return dict(data)

    def _paged(
        self, request: Request, rel_path: str, items: list[Any], render: Callable[[Any], Any]
    ) -> Response:
        query = request.query

        def number(name: str, default: int) -> int:
            raw = (query.get(name) or "").strip()
            return int(raw) if raw.isdigit() and int(raw) > 0 else default

        page = number("page", 1)
        per_page = min(number("per_page", 30), 1000)
        last = max(1, math.ceil(len(items) / per_page))
        chosen = items[(page - 1) * per_page : page * per_page]
        base = self._url(rel_path)
        links = []
        if page < last:
            links.append(f'<{base}?{page_link_query(query, page + 1, per_page)}>; rel="next"')
        if page > 1:
            prev_page = min(page - 1, last)
            links.append(f'<{base}?{page_link_query(query, prev_page, per_page)}>; rel="prev"')
        links.append(f'<{base}?{page_link_query(query, 1, per_page)}>; rel="first"')
        links.append(f'<{base}?{page_link_query(query, last, per_page)}>; rel="last"')
        return Response.json(200, [render(i) for i in chosen], [("Link", ", ".join(links))])

    @staticmethod
    def _id_set(query: Mapping[str, str], name: str) -> set[int] | None:
        raw = query.get(name)
        if raw is None:
            return None
        return {int(p) for p in raw.split(",") if p.strip().isdigit()}

    @staticmethod
    def _query_date(query: Mapping[str, str], name: str, resource: str) -> str | None:
        raw = query.get(name)
        if raw is None or raw == "":
            return None
        if parse_date(raw) is None:
            _fail(f"Invalid {name}", (resource, name, "invalid"))
        return raw

    @staticmethod
    def _contains(value: str | None, needle: str | None) -> bool:
        return needle is None or needle.lower() in (value or "").lower()

    # ----- users / projects ------------------------------------------------------------
    def _http_current_user(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(200, self._render_user(self.account_user_id))

    def _http_users(self, request: Request, params: dict[str, str]) -> Response:
        return self._paged(request, "/users", sorted(self._users), self._render_user)

    def _project_or_404(self, raw: str) -> _Project:
        key = int(raw) if raw.isdigit() else -1
        return self._projects.get(key) or _not_found("Project")

    def _http_list_projects(self, request: Request, params: dict[str, str]) -> Response:
        query = request.query
        name = query.get("name")
        enabled = parse_bool(query.get("enabled"))
        billable = parse_bool(query.get("billable"))
        increment = query.get("billing_increment")
        projects = [
            p
            for p in self._projects.values()
            if self._contains(p.name, name)
            and (enabled is None or p.enabled is enabled)
            and (billable is None or p.billable is billable)
            and (not increment or str(p.billing_increment) == increment)
        ]
        projects.sort(key=lambda p: (p.name.lower(), p.id))
        return self._paged(
            request, "/projects", projects, lambda p: self._render_project(p, full=True)
        )

    def _http_create_project(self, request: Request, params: dict[str, str]) -> Response:
        body = self._body(request)
        name = body.get("name")
        if not isinstance(name, str):
            _fail("Project could not be created", ("Project", "name", "missing_field"))
        increment = body.get("billing_increment", 15)
        billable = body.get("billable", True)
        if not isinstance(increment, int) or not isinstance(billable, bool):
            _fail("Project could not be created", ("Project", "billing_increment", "invalid"))
        project = self._create_project(str(name), int(increment), bool(billable))
        return Response.json(
            201,
            self._render_project(project, full=True),
            [("Location", self._url(f"/projects/{project.id}"))],
        )

    def _http_get_project(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(
            200, self._render_project(self._project_or_404(params["id"]), full=True)
        )

    # ----- expenses ----------------------------------------------------------------------
    def _expense_or_404(self, raw: str) -> _Expense:
        key = int(raw) if raw.isdigit() else -1
        return self._expenses.get(key) or _not_found("Expense")

    def _filter_expenses(
        self, query: Mapping[str, str], pool: Iterable[_Expense]
    ) -> list[_Expense]:
        description = query.get("description")
        project_ids = self._id_set(query, "project_ids")
        invoice_ids = self._id_set(query, "invoice_ids")
        user_ids = self._id_set(query, "user_ids")
        invoiced = parse_bool(query.get("invoiced"))
        taxable = parse_bool(query.get("taxable"))
        date_from = self._query_date(query, "from", "Expense")
        date_to = self._query_date(query, "to", "Expense")
        price_from = parse_decimal(query["price_from"]) if query.get("price_from") else None
        price_to = parse_decimal(query["price_to"]) if query.get("price_to") else None
        result = [
            e
            for e in pool
            if self._contains(e.description, description)
            and (project_ids is None or e.project_id in project_ids)
            and (invoice_ids is None or e.invoice_id in invoice_ids)
            and (user_ids is None or e.user_id in user_ids)
            and (invoiced is None or (e.invoice_id is not None) is invoiced)
            and (taxable is None or e.taxable is taxable)
            and (date_from is None or e.date >= date_from)
            and (date_to is None or e.date <= date_to)
            and (price_from is None or e.price >= price_from)
            and (price_to is None or e.price <= price_to)
        ]
        result.sort(key=lambda e: (e.date, e.id), reverse=True)
        return result

    def _http_list_expenses(self, request: Request, params: dict[str, str]) -> Response:
        expenses = self._filter_expenses(request.query, self._expense_pool(request.query))
        return self._paged(request, "/expenses", expenses, self._render_expense)

    def _http_create_expense(self, request: Request, params: dict[str, str]) -> Response:
        expense = self._create_expense(self._body(request))
        return Response.json(
            201, self._render_expense(expense), [("Location", self._url(f"/expenses/{expense.id}"))]
        )

    def _http_get_expense(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(200, self._render_expense(self._expense_or_404(params["id"])))

    def _refuse_invoiced(self, resource: str, invoice_id: int | None) -> None:
        if invoice_id is not None:
            _fail(
                f"The {resource.lower()} has been invoiced",
                (resource, "invoice", "invoiced"),
            )

    def _http_update_expense(self, request: Request, params: dict[str, str]) -> Response:
        expense = self._expense_or_404(params["id"])
        self._refuse_invoiced("Expense", expense.invoice_id)
        body = self._body(request)
        merged = {
            "date": expense.date,
            "project_id": expense.project_id,
            "price": expense.price,
            "taxable": expense.taxable,
            "description": expense.description,
            "user_id": expense.user_id,
            **body,
        }
        replacement = self._create_expense(merged, replacing=expense)
        return Response.json(200, self._render_expense(replacement))

    def _http_delete_expense(self, request: Request, params: dict[str, str]) -> Response:
        expense = self._expense_or_404(params["id"])
        self._refuse_invoiced("Expense", expense.invoice_id)
        self._drop_expense(expense)
        return Response.empty(204)

    # ----- entries -----------------------------------------------------------------------
    def _entry_or_404(self, raw: str) -> _Entry:
        key = int(raw) if raw.isdigit() else -1
        return self._entries.get(key) or _not_found("Entry")

    def _filter_entries(self, query: Mapping[str, str], pool: Iterable[_Entry]) -> list[_Entry]:
        description = query.get("description")
        project_ids = self._id_set(query, "project_ids")
        invoice_ids = self._id_set(query, "invoice_ids")
        user_ids = self._id_set(query, "user_ids")
        invoiced = parse_bool(query.get("invoiced"))
        billable = parse_bool(query.get("billable"))
        date_from = self._query_date(query, "from", "Entry")
        date_to = self._query_date(query, "to", "Entry")
        result = [
            e
            for e in pool
            if self._contains(e.description, description)
            and (project_ids is None or e.project_id in project_ids)
            and (invoice_ids is None or e.invoice_id in invoice_ids)
            and (user_ids is None or e.user_id in user_ids)
            and (invoiced is None or (e.invoice_id is not None) is invoiced)
            and (billable is None or e.billable is billable)
            and (date_from is None or e.date >= date_from)
            and (date_to is None or e.date <= date_to)
        ]
        result.sort(key=lambda e: (e.date, e.id), reverse=True)
        return result

    def _http_list_entries(self, request: Request, params: dict[str, str]) -> Response:
        entries = self._filter_entries(request.query, self._entry_pool(request.query))
        return self._paged(request, "/entries", entries, self._render_entry)

    def _http_create_entry(self, request: Request, params: dict[str, str]) -> Response:
        body = self._body(request)
        errors: list[tuple[str, str, str]] = []
        date = body.get("date")
        if date is None:
            errors.append(("Entry", "date", "missing_field"))
        elif parse_date(date) is None:
            errors.append(("Entry", "date", "invalid"))
        minutes = body.get("minutes")
        if minutes is None:
            errors.append(("Entry", "minutes", "missing_field"))
        elif isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
            errors.append(("Entry", "minutes", "invalid"))
        project: _Project | None = None
        project_id = body.get("project_id")
        project_name = body.get("project_name")
        if project_id is not None:
            project = self._projects.get(project_id) if isinstance(project_id, int) else None
            if project is None:
                errors.append(("Entry", "project_id", "missing"))
        if errors:
            _fail("Entry could not be saved", *errors)
        user_id = self._user_id(body.get("user_id"), "Entry")
        if project is None and isinstance(project_name, str) and project_name.strip():
            name = project_name.strip()
            project = next(
                (p for p in self._projects.values() if p.name.lower() == name.lower()), None
            ) or self._create_project(name, 15, True)
        assert isinstance(minutes, int)
        if project is not None:
            increment = project.billing_increment
            minutes = -(-minutes // increment) * increment
        now = self.now()
        description, tags = parse_hashtags(str(body.get("description") or ""))
        entry = _Entry(
            id=self._id("entry"),
            date=str(date),
            user_id=user_id,
            minutes=minutes,
            description=description,
            tags=tags,
            project_id=project.id if project else None,
            billable=project.billable if project else True,
            created_at=now,
            updated_at=now,
            source_url=body.get("source_url"),
        )
        self._store_entry(entry)
        return Response.json(
            201, self._render_entry(entry), [("Location", self._url(f"/entries/{entry.id}"))]
        )

    def _http_get_entry(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(200, self._render_entry(self._entry_or_404(params["id"])))

    def _http_delete_entry(self, request: Request, params: dict[str, str]) -> Response:
        entry = self._entry_or_404(params["id"])
        self._refuse_invoiced("Entry", entry.invoice_id)
        self._drop_entry(entry)
        return Response.empty(204)

    # ----- invoices ----------------------------------------------------------------------
    def _http_list_invoices(self, request: Request, params: dict[str, str]) -> Response:
        query = request.query
        state = query.get("state")
        if state is not None and state not in (*INVOICE_STATES, "none"):
            _fail("Invalid state", ("Invoice", "state", "invalid"))
        reference = query.get("reference")
        project_ids = self._id_set(query, "project_ids")
        currency = (query.get("currency_code") or "").upper() or None
        date_from = self._query_date(query, "invoice_date_from", "Invoice")
        date_to = self._query_date(query, "invoice_date_to", "Invoice")

        def moment(name: str) -> datetime | None:
            raw = query.get(name)
            if raw is None or raw == "":
                return None
            parsed = parse_timestamp(raw)
            if parsed is None:
                _fail(f"Invalid {name}", ("Invoice", name, "invalid"))
            return parsed

        def amount(name: str) -> Decimal | None:
            raw = query.get(name)
            if raw is None or raw == "":
                return None
            parsed = parse_decimal(raw)
            if parsed is None:
                _fail(f"Invalid {name}", ("Invoice", name, "invalid"))
            return parsed

        updated_from = moment("updated_from")
        updated_to = moment("updated_to")
        total_from = amount("total_amount_from")
        total_to = amount("total_amount_to")
        text_filters = {
            key: query[key]
            for key in (
                "company_name",
                "project_name",
                "recipient_details",
                "company_details",
                "description",
                "footer",
            )
            if key in query
        }
        result: list[_Invoice] = []
        for invoice in self._invoices.values():
            if state is not None and invoice.state != state:
                continue
            if reference is not None and not self._contains(invoice.reference, reference):
                continue
            if currency is not None and invoice.currency != currency:
                continue
            if date_from is not None and invoice.invoice_date < date_from:
                continue
            if date_to is not None and invoice.invoice_date > date_to:
                continue
            if updated_from is not None and invoice.updated_at < updated_from:
                continue
            if updated_to is not None and invoice.updated_at > updated_to:
                continue
            if any(not self._contains(invoice.details.get(k), v) for k, v in text_filters.items()):
                continue
            if project_ids is not None and not (self._invoice_project_ids(invoice) & project_ids):
                continue
            if total_from is not None or total_to is not None:
                totals = self._totals(invoice)
                total = totals.major(totals.total)
                if (total_from is not None and total < total_from) or (
                    total_to is not None and total > total_to
                ):
                    continue
            result.append(invoice)
        result.sort(key=lambda i: (i.invoice_date, i.id), reverse=True)
        return self._paged(request, "/invoices", result, self._render_invoice)

    def _invoice_project_ids(self, invoice: _Invoice) -> set[int]:
        ids = {self._expenses[e].project_id for e in invoice.expense_ids if e in self._expenses}
        for entry_id in invoice.entry_ids:
            entry = self._entries.get(entry_id)
            if entry is not None and entry.project_id is not None:
                ids.add(entry.project_id)
        return ids

    def _http_create_invoice(self, request: Request, params: dict[str, str]) -> Response:
        body = self._body(request)
        entry_ids = body.get("entry_ids") or []
        expense_ids = body.get("expense_ids") or []
        if not isinstance(entry_ids, list) or not isinstance(expense_ids, list):
            _fail("Invoice could not be saved", ("Invoice", "entry_ids", "invalid"))
        now = self.now()
        invoice = _Invoice(
            id=0,
            invoice_date="",
            reference="",
            details={k: "" for k in DETAIL_STRINGS if k != "reference"},
            flags=dict(SHOW_FLAGS),
            customization=dict(CUSTOMIZATION_DEFAULTS),
            rate=_RateCalculation(standard_hourly_rate=Decimal(0)),
            created_at=now,
            updated_at=now,
            share_token="",
        )
        self._apply_details(invoice, body, creating=True)
        entries, expenses, errors = self._check_items(None, entry_ids, expense_ids)
        if errors:
            _fail("Entries or Expenses could not be added", *errors)
        taxes = self._parse_taxes(body["taxes"]) if body.get("taxes") is not None else []
        invoice.id = self._id("invoice")
        digest = hashlib.sha256(f"noko-sandbox-share-{invoice.id}".encode()).hexdigest()
        invoice.share_token = digest[:25]
        invoice.taxes = taxes
        if not invoice.reference:
            invoice.reference = self._next_reference()
        self._invoices[invoice.id] = invoice
        self._attach_entries(invoice, entries)
        self._attach_expenses(invoice, expenses)
        return Response.json(
            201, self._render_invoice(invoice), [("Location", self._url(f"/invoices/{invoice.id}"))]
        )

    def _next_reference(self) -> str:
        """A reference for an invoice created without one, "based on previous invoices" (the
        docs' words): the number at the end of the newest invoice's reference plus one, with its
        prefix and width (after `KS-4907` comes `KS-4908`); `0001` when there is none."""
        for previous in sorted(self._invoices.values(), key=lambda i: i.id, reverse=True):
            match = _TRAILING_NUMBER.match(previous.reference or "")
            if match is not None:
                digits = match.group("number")
                return match.group("prefix") + str(int(digits) + 1).zfill(len(digits))
        self._reference_seq += 1
        return f"{self._reference_seq:04d}"

    def _http_get_invoice(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(200, self._render_invoice(self._invoice_or_404(params["id"])))

    def _editable(self, params: dict[str, str]) -> _Invoice:
        invoice = self._invoice_or_404(params["id"])
        self._check_editable(invoice)
        return invoice

    def _http_update_invoice(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._editable(params)
        body = self._body(request)
        self._apply_details(invoice, body, creating=False)
        self._changed(invoice)
        return Response.json(200, self._render_invoice(invoice))

    def _http_delete_invoice(self, request: Request, params: dict[str, str]) -> Response:
        self._delete_invoice(self._editable(params))
        return Response.empty(204)

    def _http_invoice_entries(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._invoice_or_404(params["id"])
        pool = [self._entries[i] for i in invoice.entry_ids if i in self._entries]
        entries = self._filter_entries(request.query, pool)
        return self._paged(request, f"/invoices/{invoice.id}/entries", entries, self._render_entry)

    def _http_invoice_expenses(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._invoice_or_404(params["id"])
        pool = [self._expenses[i] for i in invoice.expense_ids if i in self._expenses]
        expenses = self._filter_expenses(request.query, pool)
        return self._paged(
            request, f"/invoices/{invoice.id}/expenses", expenses, self._render_expense
        )

    def _http_paid(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._invoice_or_404(params["id"])
        if invoice.locked:
            _fail("The invoice is locked while it is being paid", ("Invoice", "state", "locked"))
        if invoice.state != "paid":
            self._set_state(invoice, "paid", payment_method="manual")
        return Response.empty(204)

    def _http_unpaid(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._invoice_or_404(params["id"])
        if invoice.locked:
            _fail("The invoice is locked while it is being paid", ("Invoice", "state", "locked"))
        if invoice.state != "unpaid":
            self._set_state(invoice, "unpaid", payment_method="manual")
        return Response.empty(204)

    def _ids_from(self, request: Request, key: str) -> list[int]:
        body = self._body(request)
        raw = body.get(key)
        if not isinstance(raw, list):
            _fail(f"{key} is required", ("Invoice", key, "missing_field"))
        return list(raw)

    def _http_add_entries(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._editable(params)
        self._attach_entries(invoice, self._ids_from(request, "entry_ids"))
        self._changed(invoice)
        return Response.empty(204)

    def _http_remove_entries(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._editable(params)
        ids = {i for i in self._ids_from(request, "entry_ids") if isinstance(i, int)}
        self._detach_entries(invoice, ids)
        self._changed(invoice)
        return Response.empty(204)

    def _http_remove_all_entries(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._editable(params)
        self._detach_entries(invoice, None)
        self._changed(invoice)
        return Response.empty(204)

    def _http_add_expenses(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._editable(params)
        self._attach_expenses(invoice, self._ids_from(request, "expense_ids"))
        self._changed(invoice)
        return Response.empty(204)

    def _http_remove_expenses(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._editable(params)
        ids = {i for i in self._ids_from(request, "expense_ids") if isinstance(i, int)}
        self._detach_expenses(invoice, ids)
        self._changed(invoice)
        return Response.empty(204)

    def _http_remove_all_expenses(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._editable(params)
        self._detach_expenses(invoice, None)
        self._changed(invoice)
        return Response.empty(204)

    def _http_add_taxes(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._editable(params)
        body = self._body(request)
        if not isinstance(body.get("taxes"), list):
            _fail("taxes is required", ("Invoice", "taxes", "missing_field"))
        invoice.taxes.extend(self._parse_taxes(body["taxes"]))
        self._changed(invoice)
        return Response.empty(204)

    def _http_remove_taxes(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._editable(params)
        drop = {i for i in self._ids_from(request, "tax_ids") if isinstance(i, int)}
        invoice.taxes = [t for t in invoice.taxes if t.id not in drop]
        self._changed(invoice)
        return Response.empty(204)

    def _http_remove_all_taxes(self, request: Request, params: dict[str, str]) -> Response:
        invoice = self._editable(params)
        invoice.taxes = []
        self._changed(invoice)
        return Response.empty(204)

    # ----- admin -------------------------------------------------------------------------
    def _admin_state(self, request: Request, params: dict[str, str]) -> Response:
        body = self.admin_body(request)
        self.set_invoice_state(int(params["id"]), str(body.get("state")))
        return Response.json(200, self.render_invoice(int(params["id"])))

    def _admin_lock(self, request: Request, params: dict[str, str]) -> Response:
        body = self.admin_body(request)
        self.lock(int(params["id"]), bool(body.get("locked", True)))
        return Response.json(200, self.render_invoice(int(params["id"])))

    def _admin_edit(self, request: Request, params: dict[str, str]) -> Response:
        self.edit_invoice(int(params["id"]), **self.admin_body(request))
        return Response.json(200, self.render_invoice(int(params["id"])))

    def _admin_delete(self, kind: str) -> Callable[[Request, dict[str, str]], Response]:
        deleters: dict[str, Callable[[int], None]] = {
            "invoice": self.delete_invoice,
            "expense": self.delete_expense,
            "entry": self.delete_entry,
            "project": self.delete_project,
        }

        def handler(request: Request, params: dict[str, str]) -> Response:
            deleters[kind](int(params["id"]))
            return Response.empty(204)

        return handler

    def _admin_add_project(self, request: Request, params: dict[str, str]) -> Response:
        body = self.admin_body(request)
        project_id = self.add_project(
            str(body["name"]),
            billing_increment=int(body.get("billing_increment", 15)),
            billable=bool(body.get("billable", True)),
        )
        return Response.json(201, {"id": project_id})

    def _admin_add_expense(self, request: Request, params: dict[str, str]) -> Response:
        body = self.admin_body(request)
        expense_id = self.add_expense(**body)
        return Response.json(201, {"id": expense_id})

    def _admin_add_user(self, request: Request, params: dict[str, str]) -> Response:
        body = self.admin_body(request)
        user_id = self.add_user(
            str(body["first_name"]), str(body["last_name"]), str(body["email"]), body.get("id")
        )
        return Response.json(201, {"id": user_id})
