"""`reconcile` lists the differences between Kantata and Noko and repairs the safe ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.sandbox import Sandbox, generate
from tests.e2e import check_books, cli_env, run_cli


@pytest.fixture
def box() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        yield sandbox


def test_reconcile_finds_and_repairs_differences(box: Sandbox, tmp_path: Path) -> None:
    """A hand-edited total, a deleted Noko invoice and an unsynced invoice are listed, then
    `--apply` repairs them and a second reconcile finds nothing."""
    generate(box.kantata, seed=31, invoices=12, draft_rate=0, cancelled_rate=0)
    env = cli_env(box, tmp_path)
    assert run_cli(["sync"], env, tmp_path).returncode == 0
    noko = sorted(box.noko.state()["invoices"], key=lambda i: i["id"])
    edited, deleted = noko[0], noko[1]
    project_id = int(edited["projects"][0]["id"])
    box.noko.edit_invoice(
        int(edited["id"]),
        add_expenses=[{"price": "12.34", "description": "by hand", "project_id": project_id}],
    )
    box.noko.delete_invoice(int(deleted["id"]))
    workspace = box.kantata.state()["workspaces"][0]
    new_id = box.kantata.add_invoice(
        workspace_ids=[int(workspace["id"])],
        currency="USD",
        lines=[{"kind": "fixed_fee_item", "amount_in_cents": 250000, "taxable": True}],
    )

    listed = run_cli(["reconcile", "--json"], env, tmp_path)
    assert listed.returncode == 1, listed.stderr
    report = json.loads(listed.stdout)
    kinds = {(d["kind"], d["kantata_invoice_id"]) for d in report["differences"]}
    assert ("missing_in_noko", str(new_id)) in kinds
    assert any(kind == "total_mismatch" for kind, _ in kinds)
    assert sum(1 for kind, _ in kinds if kind == "missing_in_noko") == 2
    assert box.noko.state()["invoices"] != []  # listing changed nothing

    applied = run_cli(["reconcile", "--apply", "--json"], env, tmp_path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert len(json.loads(applied.stdout)["repaired"]) == 3
    books = check_books(box)
    assert [p for p in books.problems if "orphan" not in p] == []
    again = run_cli(["reconcile", "--json"], env, tmp_path)
    assert again.returncode == 0, again.stdout
    assert json.loads(again.stdout)["differences"] == []
