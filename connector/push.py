"""Realise one planned invoice in Noko exactly once, over an API without idempotency keys.

The natural keys are the invoice `reference` and the marker at the end of every expense
description (`[KS-12/te345]`). When an earlier attempt may have created objects (the intent log
says so, or a create got no answer), they are looked up by those keys first: an existing invoice
is adopted, unused expenses are reused when they match the plan and deleted when they do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import structlog

from connector.errors import AmbiguousWriteError
from mappings.to_noko import NokoExpensePlan, NokoInvoicePlan, marker, marker_prefix, parse_marker


class NokoApi(Protocol):
    """What the pusher needs of `connector.noko.NokoClient`."""

    def ensure_project(self, name: str) -> int: ...
    def create_expense(
        self, *, project_id: int, date: str, price: Decimal, taxable: bool, description: str
    ) -> dict[str, Any]: ...
    def list_expenses(self, params: Mapping[str, Any]) -> Any: ...
    def delete_expense(self, expense_id: int) -> None: ...
    def create_invoice(self, payload: Mapping[str, Any]) -> dict[str, Any]: ...
    def find_invoices_by_reference(self, reference: str) -> list[dict[str, Any]]: ...


class DuplicateInNokoError(Exception):
    """Noko holds more than one invoice with our reference: an operator must decide."""

    def __init__(self, reference: str, ids: list[Any]) -> None:
        self.reference = reference
        self.ids = ids
        super().__init__(
            f"Noko has {len(ids)} invoices with reference {reference} (ids "
            f"{', '.join(str(i) for i in ids)}); delete the extra ones in Noko, then retry"
        )


@dataclass
class PushResult:
    invoice: dict[str, Any]
    expense_ids: dict[str, int] = field(default_factory=dict)
    adopted: bool = False
    reused: int = 0
    deleted: int = 0


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _matches(expense: Mapping[str, Any], planned: NokoExpensePlan) -> bool:
    project = expense.get("project")
    project_name = project.get("name") if isinstance(project, Mapping) else None
    return (
        _decimal(expense.get("price")) == planned.price
        and bool(expense.get("taxable", True)) == planned.taxable
        and (project_name is None or project_name == planned.project)
        and str(expense.get("description") or "") == planned.description
    )


class NokoPusher:
    """Creates the expenses and the invoice of a plan; recovers what earlier attempts left."""

    def __init__(self, noko: NokoApi) -> None:
        self.noko = noko
        self.log = structlog.get_logger("kantata_sync.push")

    def find_invoice(self, reference: str) -> dict[str, Any] | None:
        found = [
            inv
            for inv in self.noko.find_invoices_by_reference(reference)
            if inv.get("reference") == reference
        ]
        if len(found) > 1:
            raise DuplicateInNokoError(reference, [inv.get("id") for inv in found])
        return found[0] if found else None

    def push(self, plan: NokoInvoicePlan, *, recovering: bool) -> PushResult:
        reused: dict[str, int] = {}
        deleted = 0
        if recovering:
            existing = self.find_invoice(plan.reference)
            if existing is not None:
                self.log.info(
                    "adopted invoice created by an earlier attempt", reference=plan.reference
                )
                _, deleted = self._sweep(plan, reuse=False)
                return PushResult(existing, adopted=True, deleted=deleted)
            reused, deleted = self._sweep(plan, reuse=True)

        project_ids = {name: self.noko.ensure_project(name) for name in self._projects(plan)}
        ids: dict[str, int] = {}
        for planned in plan.expenses:
            if planned.line_key in reused:
                ids[planned.line_key] = reused[planned.line_key]
            else:
                ids[planned.line_key] = self._create_expense(
                    plan.reference, planned, project_ids[planned.project]
                )
        body = plan.create_body([ids[p.line_key] for p in plan.expenses])
        try:
            invoice = self.noko.create_invoice(body)
        except AmbiguousWriteError:
            found = self.find_invoice(plan.reference)
            invoice = found if found is not None else self.noko.create_invoice(body)
        return PushResult(invoice, ids, reused=len(reused), deleted=deleted)

    @staticmethod
    def _projects(plan: NokoInvoicePlan) -> list[str]:
        return list(dict.fromkeys(p.project for p in plan.expenses))

    def _create_expense(self, reference: str, planned: NokoExpensePlan, project_id: int) -> int:
        try:
            created = self.noko.create_expense(
                project_id=project_id,
                date=planned.date,
                price=planned.price,
                taxable=planned.taxable,
                description=planned.description,
            )
        except AmbiguousWriteError:
            found = self._find_expense(reference, planned)
            if found is not None:
                return found
            created = self.noko.create_expense(
                project_id=project_id,
                date=planned.date,
                price=planned.price,
                taxable=planned.taxable,
                description=planned.description,
            )
        return int(created["id"])

    def _uninvoiced_marked(self, text: str) -> list[dict[str, Any]]:
        out = []
        for expense in self.noko.list_expenses({"description": text, "invoiced": "false"}):
            if expense.get("invoice"):
                continue
            if text in str(expense.get("description") or ""):
                out.append(expense)
        return out

    def _find_expense(self, reference: str, planned: NokoExpensePlan) -> int | None:
        for expense in self._uninvoiced_marked(marker(reference, planned.line_key)):
            if parse_marker(str(expense.get("description"))) == (reference, planned.line_key) and (
                _matches(expense, planned)
            ):
                return int(expense["id"])
        return None

    def _sweep(self, plan: NokoInvoicePlan, *, reuse: bool) -> tuple[dict[str, int], int]:
        """Reuse the uninvoiced expenses an earlier attempt made for this plan (when `reuse`);
        delete the ones that do not fit it (duplicates, changed amounts), so no orphans pile up."""
        planned = {p.line_key: p for p in plan.expenses}
        reused: dict[str, int] = {}
        deleted = 0
        for expense in self._uninvoiced_marked(marker_prefix(plan.reference)):
            parsed = parse_marker(str(expense.get("description")))
            if parsed is None or parsed[0] != plan.reference:
                continue
            key = parsed[1]
            wanted = planned.get(key)
            if reuse and wanted is not None and key not in reused and _matches(expense, wanted):
                reused[key] = int(expense["id"])
                continue
            self.noko.delete_expense(int(expense["id"]))
            deleted += 1
        if reused or deleted:
            self.log.info(
                "recovered expenses of an earlier attempt",
                reference=plan.reference,
                reused=len(reused),
                deleted=deleted,
            )
        return reused, deleted
