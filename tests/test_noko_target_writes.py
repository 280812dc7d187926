"""Noko's write side behind the `Target` interface: the pusher's answers and errors become the
interface's (neutral ids and errors, verified totals, lines as pushed), one result per item."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest

from connector.errors import AuthError, TransientApiError
from connector.targets.base import (
    Cancel,
    Cancelled,
    DuplicateInTargetError,
    Target,
    TargetGoneError,
    TargetRefusedError,
    Write,
    Written,
)
from connector.targets.noko.marked import Leftover
from connector.targets.noko.push import (
    DuplicateInNokoError,
    NokoGoneError,
    NokoRefusedError,
    PushResult,
    UpdateResult,
)
from connector.targets.noko.target import NokoTarget
from mappings.targets.noko import NokoInvoicePlan, plan_invoice
from tests.xero_support import ledger

DOC = ledger([(12_345, True), (655, False)])
TOTAL = "130.00"


class _Client:
    def __init__(self, invoice: dict[str, Any] | None = None) -> None:
        self.invoice = invoice
        self.reads: list[int] = []

    def get_invoice(self, invoice_id: int) -> dict[str, Any] | None:
        self.reads.append(invoice_id)
        return self.invoice


class _Pusher:
    """Answers as the pusher would; records what it was asked."""

    def __init__(self) -> None:
        self.pushed: PushResult | Exception = PushResult(
            {"id": 41, "reference": "KS-77", "total_amount": TOTAL, "state": "unpaid"},
            {"ex0": 1, "ex1": 2},
        )
        self.updated: UpdateResult | Exception = UpdateResult(
            {"id": 41, "total_amount": TOTAL, "state": "unpaid"}, added=1, removed=2
        )
        self.calls: list[tuple[Any, ...]] = []

    def push(
        self, plan: NokoInvoicePlan, *, recovering: bool, known_ids: Collection[int] = ()
    ) -> PushResult:
        self.calls.append(("push", plan.reference, recovering, tuple(known_ids)))
        if isinstance(self.pushed, Exception):
            raise self.pushed
        return self.pushed

    def update(
        self, plan: NokoInvoicePlan, noko_id: int, *, remove_foreign: bool = False
    ) -> UpdateResult:
        self.calls.append(("update", noko_id, remove_foreign))
        if isinstance(self.updated, Exception):
            raise self.updated
        return self.updated

    def cancel(self, reference: str, noko_id: int) -> str:
        self.calls.append(("cancel", reference, noko_id))
        if noko_id == 13:
            raise NokoRefusedError(13, "paid", "Noko invoice 13 is paid")
        return "deleted"

    def find_invoice(self, reference: str) -> dict[str, Any] | None:
        if reference == "KS-2":
            raise DuplicateInNokoError(reference, [5, 6])
        return {"id": 9, "reference": reference, "state": "paid"}

    def leftovers(self, text: str) -> list[Leftover]:
        self.calls.append(("leftovers", text))
        return [Leftover("expense", 1, "KS-1"), Leftover("entry", 2, "KS-2")]

    def delete_leftover(self, leftover: Leftover) -> None:
        self.calls.append(("delete", leftover.kind, leftover.id))


def _target(client: _Client | None = None) -> tuple[NokoTarget, _Pusher]:
    target = NokoTarget(client or _Client(), reference="INV-{id}")  # type: ignore[arg-type]
    pusher = _Pusher()
    target.pusher = pusher  # type: ignore[assignment]
    return target, pusher


def test_create_answers_neutral_fields_lines_and_adopts_known_ids() -> None:
    target, pusher = _target()
    as_target: Target = target
    assert as_target.batch_size == 1
    (written,) = as_target.create([Write("77", DOC, known_ids=("41", "x"), recovering=True)])
    assert isinstance(written, Written)
    assert (written.target_id, written.state, written.lines) == ("41", "unpaid", ["ex0", "ex1"])
    assert written.invoice["id"] == "41" and written.invoice["paid"] is False
    assert (written.created, written.adopted, written.problems) == (True, False, [])
    # A known id that is no Noko id is not asked for.
    assert pusher.calls == [("push", "KS-77", True, (41,))]


def test_create_verifies_the_total_and_reads_once_when_the_answer_lacks_it() -> None:
    client = _Client({"id": 41, "total_amount": TOTAL})
    target, pusher = _target(client)
    pusher.pushed = PushResult({"id": 41, "reference": "KS-77"}, {"ex0": 1})
    (written,) = target.create([Write("77", DOC)])
    assert isinstance(written, Written)
    assert written.problems == [] and client.reads == [41]

    client.invoice = {"id": 41, "total_amount": "129.99"}
    (written,) = target.create([Write("77", DOC)])
    assert isinstance(written, Written)
    assert written.problems and "129.99" in written.problems[0]

    # An adopted invoice is not read again: its lines are unknown, it was not created now.
    pusher.pushed = PushResult({"id": 41, "total_amount": "1.00"}, adopted=True)
    (written,) = target.create([Write("77", DOC)])
    assert isinstance(written, Written)
    assert (written.lines, written.created, written.adopted) == (None, False, True)
    assert written.problems and client.reads == [41, 41]


def test_errors_become_the_interfaces_one_result_per_item() -> None:
    target, pusher = _target()
    pusher.pushed = DuplicateInNokoError("KS-77", [3, 4])
    (dup,) = target.create([Write("77", DOC)])
    assert isinstance(dup, DuplicateInTargetError) and dup.ids == [3, 4]
    assert str(dup).startswith("Noko has 2 invoices with reference KS-77")

    paid = {"id": 41, "total_amount": TOTAL, "state": "paid"}
    pusher.updated = NokoRefusedError(41, "paid", "Noko invoice 41 is paid", paid)
    (refused,) = target.update([Write("77", DOC, target_id="41", force=True)])
    assert isinstance(refused, TargetRefusedError)
    assert (refused.target_id, refused.code) == ("41", "paid")
    assert refused.invoice is not None and refused.invoice["id"] == "41"
    # The engine tells "already as Kantata asks" from the answer alone.
    assert target.as_asked(DOC, refused.invoice)
    assert pusher.calls[-1] == ("update", 41, True)

    pusher.updated = NokoGoneError("Noko invoice 41 no longer exists")
    (gone,) = target.update([Write("77", DOC, target_id="41")])
    assert isinstance(gone, TargetGoneError) and gone.target_id == "41"
    (not_noko,) = target.update([Write("77", DOC, target_id="abc")])
    assert isinstance(not_noko, TargetGoneError)

    pusher.updated = TransientApiError("noko", "timed out")
    (transient,) = target.update([Write("77", DOC, target_id="41")])
    assert isinstance(transient, TransientApiError)

    # What concerns the whole call is raised, not one item's result.
    pusher.updated = AuthError("noko", "refused", status=401)
    with pytest.raises(AuthError):
        target.update([Write("77", DOC, target_id="41")])


def test_update_reports_lines_totals_and_detail() -> None:
    target, pusher = _target()
    pusher.updated = UpdateResult(
        {"id": 41, "total_amount": "99.00"}, added=1, removed=2, line_ids={"ex1": 7, "ex0": 6}
    )
    (written,) = target.update([Write("77", DOC, target_id="41")])
    assert isinstance(written, Written)
    assert written.lines == ["ex0", "ex1"]
    assert written.detail == "1 lines added, 2 removed"
    assert written.problems and "99.00" in written.problems[0]


def test_cancel_find_one_and_late_writes() -> None:
    target, pusher = _target()
    done, refused = target.cancel([Cancel("1", "KS-1", "12"), Cancel("2", "KS-2", "13")])
    assert isinstance(done, Cancelled) and (done.target_id, done.state) == ("12", "deleted")
    assert isinstance(refused, TargetRefusedError) and refused.code == "paid"

    found = target.find_one("KS-1")
    assert found is not None and (found["id"], found["paid"]) == ("9", True)
    with pytest.raises(DuplicateInTargetError):
        target.find_one("KS-2")

    assert target.sweep_late_writes(lambda reference: reference == "KS-2") == 1
    # The leftovers are looked for under the profile's reference prefix.
    assert ("leftovers", "[INV-") in pusher.calls
    assert pusher.calls[-1] == ("delete", "entry", 2)


def test_header_differs_compares_the_planned_fields() -> None:
    target, _ = _target()
    fields = dict(plan_invoice(DOC).fields)
    assert not target.header_differs(DOC, fields)
    assert target.header_differs(DOC, {**fields, "project_name": "changed by hand"})
