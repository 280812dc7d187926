"""Creates that time out and are applied by the server later: never twice, never orphaned."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

import pytest

from connector.errors import (
    AmbiguousWriteError,
    PermanentApiError,
    TransientApiError,
    WriteInDoubtError,
)
from connector.targets.noko.push import NokoPusher
from mappings.targets.noko import NokoExpensePlan, NokoInvoicePlan, marker, owner_marker

REFERENCE = "KS-7"


class LateNoko:
    """An in-memory Noko whose first create of the chosen kinds times out and is applied only
    when `land()` is called, like a request the server is still working on. Unless `strict`, it
    does not refuse expenses that are already on another invoice (not every server checks)."""

    def __init__(self, late: set[str], *, strict: bool = False, land_on_create: bool = False):
        self.late = set(late)
        self.strict = strict  # refuse expenses already on an invoice, as Noko does
        self.land_on_create = land_on_create  # late writes land just before the next create
        self.expenses: dict[int, dict[str, Any]] = {}
        self.invoices: dict[int, dict[str, Any]] = {}
        self.pending: list[Callable[[], object]] = []
        self.next_id = 100

    def land(self) -> None:
        for apply in self.pending:
            apply()
        self.pending.clear()

    def _create(self, kind: str, apply: Callable[[], Any]) -> Any:
        if kind in self.late:
            self.late.discard(kind)
            self.pending.append(apply)
            raise AmbiguousWriteError("noko", "ReadTimeout", method="POST", path=f"/{kind}")
        return apply()

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def ensure_project(self, name: str, billing_increment: int | None = None) -> int:
        return 1

    def project_billing_increment(self, name: str) -> int | None:
        return None

    def create_expense(
        self, *, project_id: int, date: str, price: Decimal, taxable: bool, description: str
    ) -> int:
        def apply() -> int:
            expense_id = self._new_id()
            self.expenses[expense_id] = {
                "id": expense_id,
                "price": price,
                "taxable": taxable,
                "description": description,
                "invoice": None,
            }
            return expense_id

        created: int = self._create("expenses", apply)
        return created

    def list_expenses(self, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        text = str(params.get("description") or "")
        return iter(
            [e for e in self.expenses.values() if text in e["description"] and not e["invoice"]]
        )

    def delete_expense(self, expense_id: int) -> None:
        self.expenses.pop(expense_id, None)

    def list_entries(self, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        return iter([])

    def create_invoice(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        if self.land_on_create:
            self.land()
        taken = [i for i in payload["expense_ids"] if self.expenses[i]["invoice"]]
        if self.strict and taken:
            raise PermanentApiError(
                "noko", f"Expense expense_ids[{taken[0]}]: invoiced", status=400, method="POST"
            )

        def apply() -> dict[str, Any]:
            invoice_id = self._new_id()
            for expense_id in payload["expense_ids"]:
                self.expenses[expense_id]["invoice"] = {"id": invoice_id}
            self.invoices[invoice_id] = {
                "id": invoice_id,
                "reference": payload["reference"],
                "footer": payload.get("footer", ""),
            }
            return self.invoices[invoice_id]

        return self._create("invoices", apply)

    def find_invoices_by_reference(self, reference: str) -> list[dict[str, Any]]:
        return [i for i in self.invoices.values() if i["reference"] == reference]

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the pusher should not call {name}")


def _plan() -> NokoInvoicePlan:
    lines = [("a1", Decimal("10.00")), ("a2", Decimal("2.50")), ("a3", Decimal("0.01"))]
    return NokoInvoicePlan(
        kantata_id="7",
        reference=REFERENCE,
        fields={"reference": REFERENCE, "footer": owner_marker(REFERENCE)},
        expenses=tuple(
            NokoExpensePlan(
                line_key=key,
                project="Project",
                date="2024-05-01",
                price=price,
                taxable=False,
                description=f"Line {key} {marker(REFERENCE, key)}",
            )
            for key, price in lines
        ),
        taxes=(),
        expected_total=Decimal("12.51"),
        expected_tax_total=Decimal(0),
        exponent=2,
        currency="USD",
    )


def _push_until_done(noko: LateNoko, pusher: NokoPusher, plan: NokoInvoicePlan) -> int:
    """Push as the engine does: a transient failure is retried later with recovery; the late
    writes land in between (or when the fake says). Returns the number of attempts."""
    recovering = False
    for attempt in range(1, 5):
        try:
            pusher.push(plan, recovering=recovering)
        except TransientApiError:
            recovering = True
            if not noko.land_on_create:
                noko.land()
            continue
        noko.land()
        return attempt
    raise AssertionError("the push never finished")


def _assert_booked_once(noko: LateNoko, plan: NokoInvoicePlan) -> None:
    assert len(noko.invoices) == 1
    (invoice_id,) = noko.invoices
    assert sorted(e["description"] for e in noko.expenses.values()) == sorted(
        p.description for p in plan.expenses
    )
    assert all(e["invoice"] == {"id": invoice_id} for e in noko.expenses.values())


@pytest.mark.parametrize("late", [{"expenses"}, {"invoices"}, {"expenses", "invoices"}])
def test_a_create_applied_late_is_reused_not_repeated(late: set[str]) -> None:
    """One invoice, one expense per line, none left over, whichever create lands late."""
    noko = LateNoko(late)
    plan = _plan()
    attempts = _push_until_done(noko, NokoPusher(noko), plan)
    assert attempts >= 2
    _assert_booked_once(noko, plan)


def test_an_invoice_landing_just_before_the_retry_is_adopted() -> None:
    """The late invoice takes the expenses first; Noko refuses the retry; the pusher adopts."""
    noko = LateNoko({"invoices"}, strict=True, land_on_create=True)
    plan = _plan()
    assert _push_until_done(noko, NokoPusher(noko), plan) == 2
    _assert_booked_once(noko, plan)


def test_in_doubt_error_is_transient_and_names_the_object() -> None:
    """The failure is transient (retried later) and says which object is in doubt."""
    noko = LateNoko({"expenses"})
    with pytest.raises(WriteInDoubtError, match=r"expense \[KS-7/a1\] is not in Noko yet") as info:
        NokoPusher(noko).push(_plan(), recovering=False)
    assert isinstance(info.value, TransientApiError)
    assert noko.invoices == {}
