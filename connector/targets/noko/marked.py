"""What the connector marks in Noko: expenses and time entries whose description ends in the
marker `[<reference>/<line key>]`. Found again by that marker, they are reused when they fit
the plan, or deleted (leftovers of an earlier attempt, or of a create that landed late)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

import structlog

from mappings.targets.noko import (
    NokoEntryPlan,
    NokoExpensePlan,
    NokoInvoicePlan,
    marker,
    marker_prefix,
    parse_marker,
    same_entry_text,
)

Kind = Literal["expense", "entry"]


class NokoApi(Protocol):
    """What the pusher needs of `connector.targets.noko.client.NokoClient`."""

    def ensure_project(self, name: str, billing_increment: int | None = None) -> int: ...
    def project_billing_increment(self, name: str) -> int | None: ...
    def create_expense(
        self, *, project_id: int, date: str, price: Decimal, taxable: bool, description: str
    ) -> int: ...
    def list_expenses(self, params: Mapping[str, Any]) -> Any: ...
    def delete_expense(self, expense_id: int) -> None: ...
    def create_entry(
        self, *, project_id: int, date: str, minutes: int, description: str
    ) -> int: ...
    def list_entries(self, params: Mapping[str, Any]) -> Any: ...
    def delete_entry(self, entry_id: int) -> None: ...
    def add_entries(self, invoice_id: int, entry_ids: Sequence[int]) -> None: ...
    def remove_entries(self, invoice_id: int, entry_ids: Sequence[int]) -> None: ...
    def create_invoice(self, payload: Mapping[str, Any]) -> dict[str, Any]: ...
    def find_invoices_by_reference(self, reference: str) -> list[dict[str, Any]]: ...
    def get_invoice(self, invoice_id: int) -> dict[str, Any] | None: ...
    def update_invoice(self, invoice_id: int, payload: Mapping[str, Any]) -> dict[str, Any]: ...
    def delete_invoice(self, invoice_id: int) -> None: ...
    def add_expenses(self, invoice_id: int, expense_ids: Sequence[int]) -> None: ...
    def remove_expenses(self, invoice_id: int, expense_ids: Sequence[int]) -> None: ...
    def add_taxes(self, invoice_id: int, taxes: Sequence[Mapping[str, Any]]) -> None: ...
    def remove_taxes(self, invoice_id: int, tax_ids: Sequence[int]) -> None: ...
    def iter_pages(
        self, path: str, params: Mapping[str, Any] | None = None, per_page: int = 1000
    ) -> Iterator[list[dict[str, Any]]]: ...


@dataclass(frozen=True)
class Leftover:
    """An uninvoiced expense or time entry carrying an invoice's marker."""

    kind: str  # "expense" or "entry"
    id: int
    reference: str


def decimal_or_none(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def matches_entry(entry: Mapping[str, Any], planned: NokoEntryPlan) -> bool:
    project = entry.get("project")
    project_name = project.get("name") if isinstance(project, Mapping) else None
    return (
        int_or_none(entry.get("minutes")) == planned.minutes
        and (project_name is None or project_name == planned.project)
        and same_entry_text(str(entry.get("description") or ""), planned.description)
    )


def int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def matches_expense(expense: Mapping[str, Any], planned: NokoExpensePlan) -> bool:
    project = expense.get("project")
    project_name = project.get("name") if isinstance(project, Mapping) else None
    return (
        decimal_or_none(expense.get("price")) == planned.price
        and bool(expense.get("taxable", True)) == planned.taxable
        and (project_name is None or project_name == planned.project)
        and str(expense.get("description") or "") == planned.description
    )


class MarkedLines:
    """The uninvoiced expenses and time entries carrying the connector's markers."""

    def __init__(self, noko: NokoApi) -> None:
        self.noko = noko
        self.log = structlog.get_logger("kantata_sync.push")

    def find_expense(self, reference: str, planned: NokoExpensePlan) -> int | None:
        for expense in self.marked("expense", marker(reference, planned.line_key)):
            if parse_marker(str(expense.get("description"))) == (reference, planned.line_key) and (
                matches_expense(expense, planned)
            ):
                return int(expense["id"])
        return None

    def marked(self, kind: Kind, text: str) -> list[dict[str, Any]]:
        """Uninvoiced expenses or time entries whose description holds `text` (a marker)."""
        listing = self.noko.list_expenses if kind == "expense" else self.noko.list_entries
        out = []
        for item in listing({"description": text, "invoiced": "false"}):
            if item.get("invoice") or item.get("invoiced_at"):
                continue
            if text in str(item.get("description") or ""):
                out.append(item)
        return out

    def sweep_kind(
        self,
        kind: Kind,
        reference: str,
        planned: Mapping[str, Any],
        matches: Callable[[Mapping[str, Any], Any], bool],
        *,
        reuse: bool,
        keep: set[str] | None = None,
    ) -> tuple[dict[str, int], int]:
        """Reuse the uninvoiced items an earlier attempt made for `reference` that fit the plan
        (when `reuse`); delete the rest (duplicates, changed amounts), so no orphans pile up."""
        reused: dict[str, int] = {}
        deleted = 0
        for item in self.marked(kind, marker_prefix(reference)):
            parsed = parse_marker(str(item.get("description")))
            if parsed is None or parsed[0] != reference:
                continue
            key = parsed[1]
            wanted = planned.get(key)
            if (
                reuse
                and wanted is not None
                and key not in reused
                and key not in (keep or set())
                and matches(item, wanted)
            ):
                reused[key] = int(item["id"])
                continue
            if kind == "expense":
                self.noko.delete_expense(int(item["id"]))
            else:
                self.noko.delete_entry(int(item["id"]))
            deleted += 1
        if reused or deleted:
            self.log.info(
                f"recovered {kind} items of an earlier attempt",
                reference=reference,
                reused=len(reused),
                deleted=deleted,
            )
        return reused, deleted

    def sweep(
        self, plan: NokoInvoicePlan, *, reuse: bool, keep: set[str] | None = None
    ) -> tuple[dict[str, int], int]:
        planned = {p.line_key: p for p in plan.expenses}
        return self.sweep_kind(
            "expense", plan.reference, planned, matches_expense, reuse=reuse, keep=keep
        )

    def sweep_entries(
        self, plan: NokoInvoicePlan, *, reuse: bool, keep: set[str] | None = None
    ) -> tuple[dict[str, int], int]:
        planned = {e.line_key: e for e in plan.entries}
        return self.sweep_kind(
            "entry", plan.reference, planned, matches_entry, reuse=reuse, keep=keep
        )

    def leftovers(self, text: str) -> list[Leftover]:
        """Uninvoiced expenses and time entries whose description holds `text` and ends in a
        marker: what a create applied after its invoice was done leaves behind."""
        found = [
            Leftover("expense", int(e["id"]), parsed[0])
            for e in self.marked("expense", text)
            if (parsed := parse_marker(str(e.get("description")))) is not None
        ]
        found += [
            Leftover("entry", int(e["id"]), parsed[0])
            for e in self.marked("entry", text)
            if (parsed := parse_marker(str(e.get("description")))) is not None
        ]
        return found

    def delete_leftover(self, leftover: Leftover) -> None:
        if leftover.kind == "entry":
            self.noko.delete_entry(leftover.id)
        else:
            self.noko.delete_expense(leftover.id)

    def sweep_reference(self, reference: str) -> int:
        """Delete every uninvoiced expense and time entry made for this reference."""
        _, expenses = self.sweep_kind("expense", reference, {}, matches_expense, reuse=False)
        _, entries = self.sweep_kind("entry", reference, {}, matches_entry, reuse=False)
        return expenses + entries
