"""Realise one planned invoice in Noko exactly once, over an API without idempotency keys.

The natural keys are the invoice `reference` and the marker at the end of every expense
description (`[KS-12/te345]`). When an earlier attempt may have created objects (the intent log
says so, or a create got no answer), they are looked up by those keys first: an existing invoice
is adopted, unused expenses are reused when they match the plan and deleted when they do not.
A create that got no answer and cannot be found is not sent again in the same attempt, because
the server may still apply it: the invoice fails transiently and the next attempt looks first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from connector.errors import (
    AmbiguousWriteError,
    NotFoundError,
    PermanentApiError,
    WriteInDoubtError,
)
from connector.targets.noko.marked import (
    Leftover,
    MarkedLines,
    NokoApi,
    decimal_or_none,
    int_or_none,
    matches_entry,
    matches_expense,
)
from mappings.targets.noko import (
    NokoEntryPlan,
    NokoExpensePlan,
    NokoInvoicePlan,
    is_ours,
    marker,
    parse_marker,
)

ENTRY_KEY = "entry:"
"""Prefix of time-entry keys in `PushResult.expense_ids` (and the store's `noko_lines`)."""


class NokoGoneError(Exception):
    """The Noko invoice the connector pushed no longer exists."""


class BillingIncrementError(PermanentApiError):
    """A time entry would not keep its minutes: Noko rounds them up to its project's billing
    increment, which is not the one the plan was made for. Nothing is created."""

    def __init__(self, project: str, increment: int, planned: NokoEntryPlan, wanted: int | None):
        super().__init__(
            "noko",
            f"Noko project {project!r} rounds time up to multiples of {increment} minutes, so "
            f"time entry {planned.line_key} of {planned.minutes} minutes would change the total "
            f"(the profile's time.billing_increment is {wanted}): set the project's billing "
            f'increment in Noko to {wanted}, or use time.mode = "amounts"',
        )


class NokoRefusedError(Exception):
    """Noko will not let the invoice change: it is paid or locked for payment."""

    def __init__(
        self, noko_id: int, code: str, message: str, invoice: dict[str, Any] | None = None
    ) -> None:
        self.noko_id = noko_id
        self.code = code
        self.invoice = invoice
        """The Noko invoice as read, when it was (to tell whether it is already as wanted)."""
        super().__init__(message)


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
class UpdateResult:
    invoice: dict[str, Any]
    added: int = 0
    removed: int = 0
    taxes_changed: bool = False
    header_changed: bool = False
    foreign_removed: int = 0
    line_ids: dict[str, int] = field(default_factory=dict)
    """Line key -> Noko id of every line on the invoice after the update."""

    @property
    def changed(self) -> bool:
        return bool(
            self.added
            or self.removed
            or self.foreign_removed
            or self.taxes_changed
            or self.header_changed
        )


@dataclass
class PushResult:
    invoice: dict[str, Any]
    expense_ids: dict[str, int] = field(default_factory=dict)
    adopted: bool = False
    reused: int = 0
    deleted: int = 0


class NokoPusher:
    """Creates the expenses and the invoice of a plan; recovers what earlier attempts left."""

    def __init__(self, noko: NokoApi) -> None:
        self.noko = noko
        self.lines = MarkedLines(noko)
        self.log = structlog.get_logger("kantata_sync.push")

    def find_invoice(
        self, reference: str, *, known_ids: Collection[int] = ()
    ) -> dict[str, Any] | None:
        """The connector's own Noko invoice for `reference`: one carrying the owner marker, or
        one whose id the connector recorded (`known_ids`, e.g. from its Kantata reference).
        An invoice with the same reference but no such proof (a bookkeeper's, whose reference
        Noko generated) is never adopted."""
        found = [
            inv
            for inv in self.noko.find_invoices_by_reference(reference)
            if inv.get("reference") == reference
            and (int_or_none(inv.get("id")) in known_ids or self.owns(inv, reference))
        ]
        if len(found) > 1:
            raise DuplicateInNokoError(reference, [inv.get("id") for inv in found])
        return found[0] if found else None

    def owns(self, invoice: Mapping[str, Any], reference: str) -> bool:
        """Whether a Noko invoice carrying `reference` is the connector's: the owner marker in
        its footer, or else (a footer Noko did not keep, or an invoice made before the marker)
        its expenses or time entries carry our line markers for `reference`, which a person's
        invoice cannot (Noko invoices an expense once). The fallback costs one or two requests,
        only for an invoice without the footer marker."""
        if is_ours(invoice, reference):
            return True
        noko_id = int_or_none(invoice.get("id"))
        if noko_id is None or invoice.get("reference") != reference:
            return False
        for kind in ("expenses", "entries"):
            for page in self.noko.iter_pages(f"/invoices/{noko_id}/{kind}"):
                for item in page:
                    parsed = parse_marker(str(item.get("description") or ""))
                    if parsed is not None and parsed[0] == reference:
                        return True
        return False

    def push(
        self, plan: NokoInvoicePlan, *, recovering: bool, known_ids: Collection[int] = ()
    ) -> PushResult:
        reused: dict[str, int] = {}
        deleted = 0
        if recovering:
            existing = self.find_invoice(plan.reference, known_ids=known_ids)
            if existing is not None:
                self.log.info(
                    "adopted invoice created by an earlier attempt", reference=plan.reference
                )
                _, deleted = self.lines.sweep(plan, reuse=False)
                if plan.entries:
                    deleted += self.lines.sweep_entries(plan, reuse=False)[1]
                return PushResult(existing, adopted=True, deleted=deleted)
            reused, deleted = self.lines.sweep(plan, reuse=True)
            reused_entries, deleted_entries = self.lines.sweep_entries(plan, reuse=True)
            deleted += deleted_entries
        else:
            reused_entries = {}

        project_ids = {name: self._project(plan, name) for name in self._projects(plan)}
        self._check_increments(plan, plan.entries)
        ids: dict[str, int] = {}
        for planned in plan.expenses:
            if planned.line_key in reused:
                ids[planned.line_key] = reused[planned.line_key]
            else:
                ids[planned.line_key] = self._create_expense(
                    plan.reference, planned, project_ids[planned.project]
                )
        entry_ids: dict[str, int] = {}
        for entry in plan.entries:
            entry_ids[entry.line_key] = reused_entries.get(entry.line_key) or self._create_entry(
                plan.reference, entry, project_ids[entry.project]
            )
        body = plan.create_body(
            [ids[p.line_key] for p in plan.expenses], [entry_ids[e.line_key] for e in plan.entries]
        )
        try:
            invoice = self.noko.create_invoice(body)
        except AmbiguousWriteError as exc:
            found = self.find_invoice(plan.reference)
            if found is None:
                raise WriteInDoubtError.after(exc, f"invoice {plan.reference}", "Noko") from None
            invoice = found
        except PermanentApiError:
            # An earlier create that got no answer may have landed in the meantime and taken
            # these expenses (Noko refuses expenses already invoiced): adopt it if it is there.
            found = self.find_invoice(plan.reference)
            if found is None:
                raise
            self.log.info(
                "adopted invoice that an earlier attempt created late", reference=plan.reference
            )
            return PushResult(found, adopted=True, deleted=deleted)
        ids.update({ENTRY_KEY + key: value for key, value in entry_ids.items()})
        return PushResult(invoice, ids, reused=len(reused) + len(reused_entries), deleted=deleted)

    def _project(self, plan: NokoInvoicePlan, name: str) -> int:
        """The Noko project's id; one the connector creates gets the plan's billing increment
        (time entries mode), not the account's default."""
        if plan.billing_increment is None:
            return self.noko.ensure_project(name)
        return self.noko.ensure_project(name, billing_increment=plan.billing_increment)

    def _check_increments(self, plan: NokoInvoicePlan, entries: Sequence[NokoEntryPlan]) -> None:
        """Before anything is created: every entry keeps its minutes on its project (Noko rounds
        an entry's minutes up to the project's billing increment)."""
        for entry in entries:
            increment = self.noko.project_billing_increment(entry.project)
            if increment is not None and entry.minutes % increment:
                raise BillingIncrementError(entry.project, increment, entry, plan.billing_increment)

    @staticmethod
    def _projects(plan: NokoInvoicePlan) -> list[str]:
        return list(
            dict.fromkeys([p.project for p in plan.expenses] + [e.project for e in plan.entries])
        )

    def _create_entry(self, reference: str, planned: NokoEntryPlan, project_id: int) -> int:
        try:
            return self.noko.create_entry(
                project_id=project_id,
                date=planned.date,
                minutes=planned.minutes,
                description=planned.description,
            )
        except AmbiguousWriteError as exc:
            for entry in self.lines.marked("entry", marker(reference, planned.line_key)):
                if matches_entry(entry, planned):
                    return int(entry["id"])
            raise WriteInDoubtError.after(
                exc, f"time entry {marker(reference, planned.line_key)}", "Noko"
            ) from None

    def _create_expense(self, reference: str, planned: NokoExpensePlan, project_id: int) -> int:
        try:
            return self.noko.create_expense(
                project_id=project_id,
                date=planned.date,
                price=planned.price,
                taxable=planned.taxable,
                description=planned.description,
            )
        except AmbiguousWriteError as exc:
            found = self.lines.find_expense(reference, planned)
            if found is not None:
                return found
            raise WriteInDoubtError.after(
                exc, f"expense {marker(reference, planned.line_key)}", "Noko"
            ) from None

    # ------------------------------------------------------------------ lifecycle

    def _current(self, noko_id: int) -> dict[str, Any]:
        invoice = self.noko.get_invoice(noko_id)
        if invoice is None:
            raise NokoGoneError(f"Noko invoice {noko_id} no longer exists")
        state = str(invoice.get("state") or "")
        if state == "paid":
            raise NokoRefusedError(noko_id, "paid", f"Noko invoice {noko_id} is paid", invoice)
        return invoice

    def invoice_expenses(self, noko_id: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.noko.iter_pages(f"/invoices/{noko_id}/expenses"):
            out.extend(page)
        return out

    def update(
        self, plan: NokoInvoicePlan, noko_id: int, *, remove_foreign: bool = False
    ) -> UpdateResult:
        """Bring an existing Noko invoice to the plan in place, diffing against what Noko holds
        now (so a crashed earlier update is simply finished): header by PUT, lines by removing
        and adding expenses, taxes by removing and adding. The invoice id never changes."""
        try:
            return self._update(plan, noko_id, remove_foreign=remove_foreign)
        except PermanentApiError as exc:
            if exc.code in ("paid", "locked"):
                raise NokoRefusedError(noko_id, exc.code, str(exc)) from exc
            if isinstance(exc, NotFoundError):
                raise NokoGoneError(f"Noko invoice {noko_id} no longer exists") from exc
            raise

    def _update(self, plan: NokoInvoicePlan, noko_id: int, *, remove_foreign: bool) -> UpdateResult:
        current = self._current(noko_id)
        result = UpdateResult(current)
        planned = {p.line_key: p for p in plan.expenses}
        present: dict[str, dict[str, Any]] = {}
        stale: list[dict[str, Any]] = []
        foreign: list[dict[str, Any]] = []
        for expense in self.invoice_expenses(noko_id):
            parsed = parse_marker(str(expense.get("description") or ""))
            if parsed is None or parsed[0] != plan.reference:
                foreign.append(expense)
                continue
            key = parsed[1]
            wanted = planned.get(key)
            if wanted is not None and key not in present and matches_expense(expense, wanted):
                present[key] = expense
            else:
                stale.append(expense)

        header = {k: v for k, v in plan.fields.items() if _differs(current.get(k), v)}
        if header:
            self.noko.update_invoice(noko_id, header)
            result.header_changed = True

        removing = stale + (foreign if remove_foreign else [])
        if removing:
            self.noko.remove_expenses(noko_id, [int(e["id"]) for e in removing])
            for expense in stale:
                self.noko.delete_expense(int(expense["id"]))
            result.removed = len(stale)
            result.foreign_removed = len(foreign) if remove_foreign else 0

        result.line_ids.update({key: int(e["id"]) for key, e in present.items()})
        missing = [p for key, p in planned.items() if key not in present]
        if missing:
            reused, _ = self.lines.sweep(plan, reuse=True, keep=set(present))
            project_ids = {
                name: self._project(plan, name)
                for name in dict.fromkeys(p.project for p in missing if p.line_key not in reused)
            }
            new_ids = [
                reused[p.line_key]
                if p.line_key in reused
                else self._create_expense(plan.reference, p, project_ids[p.project])
                for p in missing
            ]
            self.noko.add_expenses(noko_id, new_ids)
            result.added = len(new_ids)
            result.line_ids.update({p.line_key: i for p, i in zip(missing, new_ids, strict=True)})

        self._update_entries(plan, noko_id, result, remove_foreign=remove_foreign)

        have = sorted(
            (str(t.get("name") or ""), decimal_or_none(t.get("percentage")))
            for t in current.get("taxes") or []
            if isinstance(t, Mapping)
        )
        want = sorted((name, pct) for name, pct in plan.taxes)
        if have != want:
            tax_ids = [int(t["id"]) for t in current.get("taxes") or [] if isinstance(t, Mapping)]
            if tax_ids:
                self.noko.remove_taxes(noko_id, tax_ids)
            if plan.taxes:
                self.noko.add_taxes(
                    noko_id, [{"name": name, "percentage": pct} for name, pct in plan.taxes]
                )
            result.taxes_changed = True

        if result.changed:
            fresh = self.noko.get_invoice(noko_id)
            if fresh is None:
                raise NokoGoneError(f"Noko invoice {noko_id} vanished during the update")
            result.invoice = fresh
        return result

    def _update_entries(
        self, plan: NokoInvoicePlan, noko_id: int, result: UpdateResult, *, remove_foreign: bool
    ) -> None:
        planned = {e.line_key: e for e in plan.entries}
        present: dict[str, dict[str, Any]] = {}
        stale: list[dict[str, Any]] = []
        foreign: list[dict[str, Any]] = []
        for page in self.noko.iter_pages(f"/invoices/{noko_id}/entries"):
            for entry in page:
                parsed = parse_marker(str(entry.get("description") or ""))
                if parsed is None or parsed[0] != plan.reference:
                    foreign.append(entry)
                    continue
                wanted = planned.get(parsed[1])
                if wanted is not None and parsed[1] not in present and matches_entry(entry, wanted):
                    present[parsed[1]] = entry
                else:
                    stale.append(entry)
        removing = stale + (foreign if remove_foreign else [])
        if removing:
            self.noko.remove_entries(noko_id, [int(e["id"]) for e in removing])
            for entry in stale:
                self.noko.delete_entry(int(entry["id"]))
            result.removed += len(stale)
            result.foreign_removed += len(foreign) if remove_foreign else 0
        result.line_ids.update({ENTRY_KEY + key: int(e["id"]) for key, e in present.items()})
        missing = [e for key, e in planned.items() if key not in present]
        if missing:
            reused, _ = self.lines.sweep_entries(plan, reuse=True, keep=set(present))
            new_ids = []
            creating = [e for e in missing if e.line_key not in reused]
            for name in dict.fromkeys(e.project for e in creating):
                self._project(plan, name)
            self._check_increments(plan, creating)
            for wanted_entry in missing:
                if wanted_entry.line_key in reused:
                    new_ids.append(reused[wanted_entry.line_key])
                else:
                    project_id = self._project(plan, wanted_entry.project)
                    new_ids.append(self._create_entry(plan.reference, wanted_entry, project_id))
            self.noko.add_entries(noko_id, new_ids)
            result.added += len(new_ids)
            result.line_ids.update(
                {ENTRY_KEY + e.line_key: i for e, i in zip(missing, new_ids, strict=True)}
            )

    def cancel(self, reference: str, noko_id: int) -> str:
        """Delete the Noko invoice of a cancelled Kantata invoice and the expenses made for it.
        Returns 'deleted' (also when it was gone already); raises NokoRefusedError when Noko
        refuses (paid, locked)."""
        invoice = self.noko.get_invoice(noko_id)
        if invoice is not None:
            state = str(invoice.get("state") or "")
            if state == "paid":
                raise NokoRefusedError(noko_id, "paid", f"Noko invoice {noko_id} is paid")
            try:
                self.noko.delete_invoice(noko_id)
            except PermanentApiError as exc:
                if exc.code in ("paid", "locked"):
                    raise NokoRefusedError(noko_id, exc.code, str(exc)) from exc
                raise
        self.sweep_reference(reference)
        return "deleted"

    def discard(self, reference: str, noko_id: int) -> int:
        """Delete an invoice this attempt has just created (its totals are wrong, so it must
        not stay in the books), then the expenses and time entries made for it, which its
        deletion freed. Returns how many of those were deleted. Raises `NokoRefusedError` when
        Noko refuses (paid, locked), an `ApiError` when the deletion fails otherwise."""
        try:
            self.noko.delete_invoice(noko_id)
        except PermanentApiError as exc:
            if exc.code in ("paid", "locked"):
                raise NokoRefusedError(noko_id, exc.code, str(exc)) from exc
            raise
        return self.sweep_reference(reference)

    def leftovers(self, text: str) -> list[Leftover]:
        return self.lines.leftovers(text)

    def delete_leftover(self, leftover: Leftover) -> None:
        self.lines.delete_leftover(leftover)

    def sweep_reference(self, reference: str) -> int:
        """Delete every uninvoiced expense and time entry made for this reference."""
        return self.lines.sweep_reference(reference)


def _differs(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, Mapping):
        if not isinstance(current, Mapping):
            return True
        return any(_differs(current.get(k), v) for k, v in wanted.items())
    if current is None and wanted in ("", False):
        return False
    return bool(current != wanted)


def header_differs(invoice: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    """Whether a Noko invoice's header differs from the planned one (what an update would PUT)."""
    return any(_differs(invoice.get(k), v) for k, v in fields.items())
