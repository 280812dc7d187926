"""The state file is only a cache: losing it, or putting back an old copy, duplicates nothing.

Each test drives the real CLI against the sandbox over HTTP, loses or rewinds the state file, and
checks both systems' books: exactly one Noko invoice of the connector's per eligible Kantata
invoice, with Kantata's total, and a successful reference to it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sandbox import Sandbox, generate
from tests.e2e import check_books, cli_env, run_cli, status_json


def _sync(box: Sandbox, tmp_path: Path, expect: int = 0) -> str:
    done = run_cli(["sync"], cli_env(box, tmp_path), tmp_path)
    assert done.returncode == expect, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def _state_files(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.iterdir() if p.name.startswith("state.db")]


def _noko_writes(box: Sandbox) -> dict[str, int]:
    requests: dict[str, int] = box.noko.stats.snapshot()["requests"]
    return {k: v for k, v in requests.items() if not k.startswith("GET ")}


def _noko_reads(box: Sandbox) -> int:
    requests: dict[str, int] = box.noko.stats.snapshot()["requests"]
    return sum(v for k, v in requests.items() if k.startswith("GET "))


def _noko_invoice_ids(box: Sandbox) -> list[int]:
    return sorted(int(i["id"]) for i in box.noko.state()["invoices"])


def test_a_deleted_state_file_duplicates_nothing(box: Sandbox, tmp_path: Path) -> None:
    """sync, delete the state file, sync: still one Noko invoice per Kantata invoice, exit 0,
    every invoice `synced` again, and no write to Noko at all; the look-up is one listing."""
    generate(box.kantata, seed=5, invoices=14, draft_rate=0.15, cancelled_rate=0.1)
    _sync(box, tmp_path)
    books = check_books(box)
    assert books.problems == []
    before = _noko_invoice_ids(box)

    for path in _state_files(tmp_path):
        path.unlink()
    box.noko.stats.reset()
    box.kantata.stats.reset()
    _sync(box, tmp_path)

    assert _noko_invoice_ids(box) == before
    assert check_books(box).problems == []
    assert _noko_writes(box) == {}
    # One listing of the connector's Noko invoices (1,000 a page) and the usual poll.
    assert _noko_reads(box) == 2
    report = status_json(cli_env(box, tmp_path), tmp_path)
    assert report["counts"]["synced"] == books.eligible
    assert report["counts"]["failed"] == 0
    assert report["counts"]["conflict"] == 0
    # Kantata's references were already right: none is written again.
    kantata_writes = {
        k: v for k, v in box.kantata.stats.snapshot()["requests"].items() if not k.startswith("GET")
    }
    assert kantata_writes == {}

    # And the run after that is an ordinary quiet cycle.
    box.noko.stats.reset()
    _sync(box, tmp_path)
    assert box.noko.stats.snapshot()["total"] == 1


def test_an_old_backup_put_back_duplicates_nothing(box: Sandbox, tmp_path: Path) -> None:
    """A copy of the state file taken before further syncs (new invoices, an update, a payment)
    is put back: the next plain sync recognises what Noko holds, creates nothing, changes
    nothing in Noko, and reports every invoice synced."""
    generate(box.kantata, seed=9, invoices=8, draft_rate=0, cancelled_rate=0)
    _sync(box, tmp_path)
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in _state_files(tmp_path):
        shutil.copy2(path, backup / path.name)

    kantata = box.kantata.state()["invoices"]
    changed = int(kantata[0]["id"])
    paid = int(kantata[1]["id"])
    workspace = int(box.kantata.state()["workspaces"][0]["id"])
    box.kantata.update_invoice(changed, message="changed after the backup")
    fresh = [
        box.kantata.add_invoice(
            workspace_ids=[workspace],
            currency="USD",
            lines=[{"kind": "fixed_fee_item", "amount_in_cents": 1000 * (n + 1), "taxable": True}],
        )
        for n in range(3)
    ]
    _sync(box, tmp_path)
    paid_noko = next(i for i in box.noko.state()["invoices"] if i["reference"] == f"KS-{paid}")
    box.noko.set_invoice_state(int(paid_noko["id"]), "paid")
    _sync(box, tmp_path)
    assert check_books(box).problems == []
    before = _noko_invoice_ids(box)

    for path in _state_files(tmp_path):
        path.unlink()
    for path in backup.iterdir():
        shutil.copy2(path, tmp_path / path.name)
    box.noko.stats.reset()
    _sync(box, tmp_path)

    assert _noko_invoice_ids(box) == before
    assert _noko_writes(box) == {}
    assert check_books(box).problems == []
    report = status_json(cli_env(box, tmp_path), tmp_path)
    assert report["counts"]["synced"] == len(kantata) + len(fresh)
    assert report["conflicts"] == [] and report["failures"] == []
    shown = run_cli(["show", str(paid)], cli_env(box, tmp_path), tmp_path)
    assert "paid" in shown.stdout


def test_a_state_file_that_cannot_persist_is_refused(box: Sandbox, tmp_path: Path) -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        env = cli_env(box, tmp_path, KANTATA_SYNC_DATABASE_URL=url)
        done = run_cli(["sync"], env, tmp_path)
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot persist" in lines[0], done.stderr
    assert box.noko.state()["invoices"] == []


def _bookkeepers_invoice(box: Sandbox) -> dict[str, Any]:
    """A Noko invoice a person creates without a reference: Noko gives it the next one."""
    import httpx

    project = box.noko.add_project("Bookkeeping")
    expense = box.noko.add_expense(project_id=project, price="77.00", description="by hand")
    answer = httpx.post(
        f"{box.noko_url}/invoices",
        headers={"X-NokoToken": "sandbox-noko-token"},
        json={"invoice_date": "2026-01-05", "expense_ids": [expense], "company_name": "Other"},
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def _ours(box: Sandbox, kantata_id: int) -> list[dict[str, Any]]:
    marker = f"[KS-{kantata_id}/invoice]"
    return [
        i
        for i in box.noko.state()["invoices"]
        if i["reference"] == f"KS-{kantata_id}" and marker in str(i.get("footer") or "")
    ]


def test_a_bookkeepers_invoice_with_our_next_reference_is_never_taken(
    box: Sandbox, tmp_path: Path
) -> None:
    """Noko numbers an invoice made without a reference after the last one (`KS-4001` ->
    `KS-4002`), colliding with the next Kantata invoice. The connector creates its own, marked
    as such, and never adopts, changes or deletes the bookkeeper's: not in a sync, not after
    the state file is lost, not in `reconcile --apply`."""
    workspace = box.kantata.add_workspace("Harbour", currency="USD")
    lines = [{"kind": "fixed_fee_item", "amount_in_cents": 50000, "taxable": False}]
    first = box.kantata.add_invoice(workspace_ids=[workspace], currency="USD", lines=lines)
    second = box.kantata.add_invoice(
        workspace_ids=[workspace], currency="USD", lines=lines, draft=True
    )
    _sync(box, tmp_path)
    foreign = _bookkeepers_invoice(box)
    assert foreign["reference"] == f"KS-{second}"  # Noko's own numbering collides
    untouched = box.noko.render_invoice(int(foreign["id"]))

    box.kantata.update_invoice(second, draft=False)
    _sync(box, tmp_path)
    assert len(_ours(box, second)) == 1
    assert len(_ours(box, first)) == 1
    ref = [r for r in box.kantata.external_references(second) if r["service_name"] == "noko"]
    assert ref[0]["service_model_ref"] == str(_ours(box, second)[0]["id"])

    for path in _state_files(tmp_path):
        path.unlink()
    _sync(box, tmp_path)
    assert len(_ours(box, second)) == 1 and len(_ours(box, first)) == 1
    applied = run_cli(["reconcile", "--apply"], cli_env(box, tmp_path), tmp_path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert box.noko.render_invoice(int(foreign["id"])) == untouched
    assert len(box.noko.state()["invoices"]) == 3


def test_a_bookkeepers_invoice_is_not_adopted_when_the_state_is_new(
    box: Sandbox, tmp_path: Path
) -> None:
    """With no state file and a foreign invoice holding the reference, the connector creates
    its own instead of taking the bookkeeper's."""
    workspace = box.kantata.add_workspace("Harbour", currency="USD")
    lines = [{"kind": "fixed_fee_item", "amount_in_cents": 50000, "taxable": False}]
    first = box.kantata.add_invoice(workspace_ids=[workspace], currency="USD", lines=lines)
    second = box.kantata.add_invoice(
        workspace_ids=[workspace], currency="USD", lines=lines, draft=True
    )
    _sync(box, tmp_path)
    foreign = _bookkeepers_invoice(box)
    untouched = box.noko.render_invoice(int(foreign["id"]))
    for path in _state_files(tmp_path):
        path.unlink()
    box.kantata.update_invoice(second, draft=False)
    _sync(box, tmp_path)
    assert len(_ours(box, first)) == 1 and len(_ours(box, second)) == 1
    assert box.noko.render_invoice(int(foreign["id"])) == untouched


def test_an_old_backup_naming_a_deleted_noko_invoice_follows_kantata(
    box: Sandbox, tmp_path: Path
) -> None:
    """After the backup, the Noko invoice was deleted by hand and pushed again (a new id).
    The old record names the deleted one; Kantata's reference names the new one: the next
    sync takes the new one, and writes nothing anywhere."""
    generate(box.kantata, seed=12, invoices=3, draft_rate=0, cancelled_rate=0)
    _sync(box, tmp_path)
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in _state_files(tmp_path):
        shutil.copy2(path, backup / path.name)
    first = box.noko.state()["invoices"][0]
    kantata_id = int(str(first["reference"]).removeprefix("KS-"))
    box.noko.delete_invoice(int(first["id"]))
    assert run_cli(["reconcile", "--apply"], cli_env(box, tmp_path), tmp_path).returncode == 0
    (again,) = [i for i in box.noko.state()["invoices"] if i["reference"] == first["reference"]]
    assert check_books(box).problems == []

    for path in _state_files(tmp_path):
        path.unlink()
    for path in backup.iterdir():
        shutil.copy2(path, tmp_path / path.name)
    box.kantata.touch([kantata_id])
    box.noko.stats.reset()
    box.kantata.stats.reset()
    _sync(box, tmp_path)
    assert _noko_writes(box) == {}
    kantata_writes = {
        k: v for k, v in box.kantata.stats.snapshot()["requests"].items() if not k.startswith("GET")
    }
    assert kantata_writes == {}
    assert check_books(box).problems == []
    shown = run_cli(["show", str(kantata_id)], cli_env(box, tmp_path), tmp_path)
    assert str(again["id"]) in shown.stdout and "synced" in shown.stdout


def test_a_noko_invoice_as_kantata_asks_is_no_hand_edit_whatever_an_old_record_says(
    box: Sandbox, tmp_path: Path
) -> None:
    """The record is older than Noko (put back from a backup) and Kantata's change is not read
    again by the scan: reading Noko's changes, the invoice differs from the record but is as
    Kantata asks. That is synced, not a hand edit; a real hand edit still is one."""
    from datetime import UTC, datetime, timedelta

    from connector.state.store import Store

    generate(box.kantata, seed=21, invoices=2, draft_rate=0, cancelled_rate=0)
    _sync(box, tmp_path)
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in _state_files(tmp_path):
        shutil.copy2(path, backup / path.name)
    changed, edited = (int(i["id"]) for i in box.kantata.state()["invoices"])
    box.kantata.update_invoice(
        changed, lines=[{"kind": "fixed_fee_item", "amount_in_cents": 99999, "taxable": False}]
    )
    _sync(box, tmp_path)
    for path in _state_files(tmp_path):
        path.unlink()
    for path in backup.iterdir():
        shutil.copy2(path, tmp_path / path.name)
    hand = next(i for i in box.noko.state()["invoices"] if i["reference"] == f"KS-{edited}")
    project = int(hand["projects"][0]["id"])
    box.noko.edit_invoice(
        int(hand["id"]),
        add_expenses=[{"price": "5.00", "description": "by hand", "project_id": project}],
    )
    # The scan reads nothing: only Noko's changes show the difference.
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.set_cursor(datetime.now(UTC) + timedelta(days=1))
    store.close()

    _sync(box, tmp_path, expect=1)
    report = status_json(cli_env(box, tmp_path), tmp_path)
    assert [c["kantata_invoice_id"] for c in report["conflicts"]] == [str(edited)]
    assert report["counts"]["synced"] == 1


def test_an_invoice_whose_footer_lost_the_marker_is_still_known_by_its_lines(
    box: Sandbox, tmp_path: Path
) -> None:
    """The owner marker was removed from the footer by hand, the Kantata reference is gone too,
    and the state file is lost: the invoice's expenses still carry our line markers, which a
    person's invoice cannot, so it is recognised and nothing is created twice."""
    generate(box.kantata, seed=23, invoices=3, draft_rate=0, cancelled_rate=0)
    _sync(box, tmp_path)
    before = _noko_invoice_ids(box)
    first = box.noko.state()["invoices"][0]
    kantata_id = int(str(first["reference"]).removeprefix("KS-"))
    box.noko.edit_invoice(int(first["id"]), footer="Thank you for your business.")
    assert box.kantata.remove_external_reference(kantata_id, "noko")
    for path in _state_files(tmp_path):
        path.unlink()
    _sync(box, tmp_path)
    assert _noko_invoice_ids(box) == before
    assert check_books(box).problems == []


def test_an_old_backup_learns_invoices_that_only_noko_shows(box: Sandbox, tmp_path: Path) -> None:
    """An invoice pushed after the backup, whose Kantata reference was removed since and which
    the next scan does not read: reading Noko's changes shows an invoice of the connector's
    that the state file does not know. It is matched at once (synced, reference written
    again), so when it later changes in Kantata it is updated, not created again."""
    from datetime import UTC, datetime, timedelta

    from connector.state.store import Store

    generate(box.kantata, seed=25, invoices=2, draft_rate=0, cancelled_rate=0)
    _sync(box, tmp_path)
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in _state_files(tmp_path):
        shutil.copy2(path, backup / path.name)
    workspace = int(box.kantata.state()["workspaces"][0]["id"])
    late = box.kantata.add_invoice(
        workspace_ids=[workspace],
        currency="USD",
        lines=[{"kind": "fixed_fee_item", "amount_in_cents": 4200, "taxable": False}],
    )
    _sync(box, tmp_path)
    assert box.kantata.remove_external_reference(late, "noko")
    for path in _state_files(tmp_path):
        path.unlink()
    for path in backup.iterdir():
        shutil.copy2(path, tmp_path / path.name)
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.set_cursor(datetime.now(UTC) + timedelta(days=1))  # the scan reads nothing
    store.close()

    box.noko.stats.reset()
    _sync(box, tmp_path)
    assert _noko_writes(box) == {}
    shown = run_cli(["show", str(late)], cli_env(box, tmp_path), tmp_path)
    assert "synced" in shown.stdout, shown.stdout + shown.stderr
    assert check_books(box).problems == []

    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.set_cursor(None)
    store.close()
    box.kantata.update_invoice(late, message="changed later")
    _sync(box, tmp_path)
    assert len([i for i in box.noko.state()["invoices"] if i["reference"] == f"KS-{late}"]) == 1
    assert check_books(box).problems == []
