"""Our Kantata reference is written only by documented calls, against a sandbox that refuses
what the documents leave undefined (a second nested reference of a service, an upsert that
would point a reference at another object), through the whole life of invoices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandbox import Sandbox
from tests.e2e import check_books, cli_env, run_cli

UPSERT = "POST /external_references/create_or_update"
DELETE = "DELETE /external_references/{id}"


def _invoice(box: Sandbox) -> int:
    workspace = box.kantata.add_workspace("Harbour redesign", currency="USD")
    return box.kantata.add_invoice(
        workspace_ids=[workspace],
        currency="USD",
        tax_rate="10",
        lines=[
            {"kind": "time_entry", "time_in_minutes": 90, "rate_in_cents": 15000, "taxable": True},
            {"kind": "expense", "amount_in_cents": 4250, "notes": "Train", "taxable": False},
        ],
    )


def _ours(box: Sandbox, kantata_id: int) -> dict[str, Any]:
    """The one reference of ours on the invoice (there must be exactly one)."""
    refs = [r for r in box.kantata.external_references(kantata_id) if r["service_name"] == "noko"]
    assert len(refs) == 1, refs
    return refs[0]


def _noko_id(box: Sandbox, kantata_id: int) -> str:
    found = [i for i in box.noko.state()["invoices"] if i["reference"] == f"KS-{kantata_id}"]
    assert len(found) == 1, found
    return str(found[0]["id"])


class _Steps:
    def __init__(self, box: Sandbox, tmp_path: Path) -> None:
        self.box = box
        self.tmp_path = tmp_path
        self.env = cli_env(box, tmp_path)

    def run(self, *args: str, expect: int = 0) -> dict[str, int]:
        """Run a command; the Kantata requests it made, by endpoint."""
        before = dict(self.box.kantata.stats.snapshot()["requests"])
        done = run_cli(list(args), self.env, self.tmp_path)
        assert done.returncode == expect, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        after = self.box.kantata.stats.snapshot()["requests"]
        return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def test_every_reference_write_of_the_lifecycle_is_a_documented_call(
    box: Sandbox, tmp_path: Path
) -> None:
    steps = _Steps(box, tmp_path)
    kid, bad, doomed = _invoice(box), _invoice(box), _invoice(box)
    box.kantata.corrupt_invoice(bad, "currency", "XXX")

    # Push (and a mapping failure): one upsert per invoice, nothing else written.
    made = steps.run("sync", expect=1)
    assert made.get(UPSERT) == 3 and DELETE not in made
    first_noko = _noko_id(box, kid)
    ref = _ours(box, kid)
    assert (ref["status"], ref["service_model_ref"], ref["external_status"]) == (
        "successful",
        first_noko,
        "unpaid",
    )
    failed = _ours(box, bad)
    assert (failed["status"], failed["service_model_ref"]) == ("failed", f"KS-{bad}")

    # The failure fixed: the failed reference named the natural key, the new one the Noko id;
    # the old one goes first.
    box.kantata.corrupt_invoice(bad, "currency", "USD")
    box.kantata.update_invoice(bad, message="fixed")
    made = steps.run("sync")
    assert made.get(DELETE) == 1 and made.get(UPSERT) == 1
    fixed = _ours(box, bad)
    assert (fixed["status"], fixed["service_model_ref"]) == ("successful", _noko_id(box, bad))

    # An update in place keeps the Noko id: the upsert updates the same reference (its
    # message names the new total).
    ref_id = _ours(box, kid)["id"]
    box.kantata.update_invoice(kid, tax_rate="20")
    made = steps.run("sync")
    assert made.get(UPSERT) == 1 and DELETE not in made
    assert _ours(box, kid)["id"] == ref_id
    assert _noko_id(box, kid) == first_noko

    # A new Noko state flows back on the same reference.
    box.noko.set_invoice_state(int(first_noko), "awaiting_payment")
    made = steps.run("sync")
    assert made.get(UPSERT) == 1 and DELETE not in made
    assert _ours(box, kid)["external_status"] == "awaiting_payment"

    # Cancelled in Kantata: the Noko invoice goes, the reference says `deleted`.
    box.kantata.cancel(doomed)
    steps.run("sync")
    gone = _ours(box, doomed)
    assert (gone["status"], gone["external_status"]) == ("successful", "deleted")

    # Deleted in Noko by hand, then pushed again: a new Noko id, so the old reference is
    # removed before the new one is written.
    box.noko.delete_invoice(int(first_noko))
    box.kantata.update_invoice(kid, message="edited after the Noko deletion")
    steps.run("sync", expect=1)
    made = steps.run("retry", str(kid), "--force")
    second_noko = _noko_id(box, kid)
    assert second_noko != first_noko
    assert made.get(DELETE, 0) <= 1
    again = _ours(box, kid)
    assert (again["status"], again["service_model_ref"]) == ("successful", second_noko)

    # Paid at last.
    box.noko.set_invoice_state(int(second_noko), "paid")
    steps.run("sync")
    assert _ours(box, kid)["external_status"] == "paid"

    stats = box.kantata.stats.snapshot()
    assert "PUT /invoices/{id}" not in stats["requests"]
    assert "422" not in stats["statuses"]
    # The cancelled one keeps its `deleted` reference; the others are in the books once.
    assert sorted(str(i["reference"]) for i in box.noko.state()["invoices"]) == sorted(
        [f"KS-{kid}", f"KS-{bad}"]
    )


def test_a_reference_of_ours_left_by_someone_else_is_replaced_not_duplicated(
    box: Sandbox, tmp_path: Path
) -> None:
    """A reference of our service already on the invoice and naming something else (a state
    file lost, a hand-made one): it is replaced by the one naming the Noko invoice."""
    steps = _Steps(box, tmp_path)
    kid = _invoice(box)
    box.kantata.upsert_external_reference(
        {
            "subject_type": "Invoice",
            "subject_id": str(kid),
            "service_name": "noko",
            "service_model": "invoice",
            "service_model_ref": "424242",
            "status": "pending",
        }
    )
    steps.run("sync")
    ref = _ours(box, kid)
    assert (ref["status"], ref["service_model_ref"]) == ("successful", _noko_id(box, kid))
    assert check_books(box).problems == []
