"""Xero as the target, end to end: the real CLI in its own processes, `KANTATA_SYNC_TARGET=xero`
and the XERO_* settings, against the sandbox's fake Xero over real HTTP.

Every scenario ends by checking the books: each eligible Kantata invoice Xero can hold has
exactly one live document with `Reference` KS-<id> (an `ACCREC` invoice, or an `ACCRECCREDIT`
credit note of minus the total for a credit), Kantata's total to the minor unit, the same
currency, and a successful Kantata reference whose `service_model_ref` is the document's id and
`external_status` its `Status`; a rerun writes nothing.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector.faces.demo import sandbox_xero_profile
from sandbox import FaultConfig, Sandbox, generate
from tests.e2e import cli_env, run_cli, status_json
from tests.faults_support import CliProcess, assert_no_traceback, reaping, wait_until

pytestmark = pytest.mark.e2e

LIVE = ("DRAFT", "SUBMITTED", "AUTHORISED", "PAID")
API = "/api.xro/2.0"


@pytest.fixture
def xbox() -> Iterator[Sandbox]:
    """Kantata and Xero over loopback HTTP; Xero's minute limit lifted (tests that need the
    limits set them), its day limit as on a real organisation."""
    with Sandbox(xero_per_minute=10_000, xero_per_day=100_000) as sandbox:
        yield sandbox


def xero_env(box: Sandbox, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The CLI's environment for Xero: no NOKO_* setting at all."""
    env = cli_env(box, tmp_path)
    for key in ("NOKO_BASE_URL", "NOKO_TOKEN", "NOKO_MAX_REQUESTS_PER_SECOND", "NOKO_BURST"):
        env.pop(key)
    profile = tmp_path / "xero-profile.toml"
    if not profile.exists():
        sandbox_xero_profile(box, tmp_path)
    env.update(
        {
            "KANTATA_SYNC_TARGET": "xero",
            "XERO_CLIENT_ID": box.xero.client_id,
            "XERO_CLIENT_SECRET": box.xero.client_secret,
            "XERO_BASE_URL": box.xero_api_url,
            "XERO_TOKEN_URL": box.xero_token_url,
            "XERO_CONNECTIONS_URL": box.xero_connections_url,
            "XERO_MAX_REQUESTS_PER_MINUTE": "10000",
            "KANTATA_SYNC_MAPPING_PROFILE": str(profile),
            "KANTATA_SYNC_LOCK_WAIT": "0",
        }
    )
    env.update(extra)
    return env


def sync(env: dict[str, str], tmp_path: Path, expect: int | None = 0) -> str:
    done = run_cli(["sync"], env, tmp_path)
    assert_no_traceback(done.stdout, done.stderr)
    if expect is not None:
        assert done.returncode == expect, done.stdout + done.stderr[-4000:]
    return done.stdout + done.stderr


def xero_requests(box: Sandbox) -> dict[str, int]:
    """Accounting API requests by `METHOD path` (token and connections left out)."""
    requests: dict[str, int] = box.xero.stats.snapshot()["requests"]
    return {k: v for k, v in requests.items() if API in k}


def xero_writes(box: Sandbox) -> dict[str, int]:
    return {k: v for k, v in xero_requests(box).items() if not k.startswith("GET ")}


def kantata_writes(box: Sandbox) -> dict[str, int]:
    requests: dict[str, int] = box.kantata.stats.snapshot()["requests"]
    return {k: v for k, v in requests.items() if not k.startswith("GET ")}


def reset_stats(box: Sandbox) -> None:
    box.xero.stats.reset()
    box.kantata.stats.reset()


def _held(box: Sandbox, invoice: dict[str, Any]) -> bool:
    billable = any(line.get("billable", True) for line in invoice.get("lines") or [])
    return invoice["currency"] in box.xero.currencies and billable


@dataclass
class Books:
    eligible: int
    problems: list[str]
    docs: dict[str, dict[str, Any]]
    """Kantata id -> its one live Xero document."""


def check_books(box: Sandbox, skip: frozenset[str] = frozenset()) -> Books:
    """See the module docstring. `skip`: Kantata ids whose state a scenario checks itself."""
    xero = box.xero.state()
    live: dict[str, list[dict[str, Any]]] = {}
    for doc in [*xero["invoices"], *xero["credit_notes"]]:
        if doc.get("Status") in LIVE:
            live.setdefault(str(doc.get("Reference")), []).append(doc)
    problems: list[str] = []
    docs: dict[str, dict[str, Any]] = {}
    eligible = 0
    for invoice in box.kantata.state()["invoices"]:
        kid = str(invoice["id"])
        matches = live.pop(f"KS-{kid}", [])
        if kid in skip:
            continue
        refs = [r for r in invoice.get("external_references", []) if r["service_name"] == "xero"]
        if invoice["draft"] or invoice["status"] == "cancelled" or not _held(box, invoice):
            if matches:
                problems.append(f"{kid}: not to be in Xero, yet {len(matches)} live")
            continue
        eligible += 1
        if len(matches) != 1:
            problems.append(f"{kid}: {len(matches)} live Xero documents")
            continue
        doc = docs[kid] = matches[0]
        expected = Decimal(int(invoice["balance_in_cents"])) / Decimal(
            int(invoice["currency_base_unit"])
        )
        credit = expected < 0
        kind = "ACCRECCREDIT" if credit else "ACCREC"
        if doc["Type"] != kind:
            problems.append(f"{kid}: {doc['Type']}, expected {kind}")
        total = Decimal(str(doc["Total"]))
        if (-total if credit else total) != expected:
            problems.append(f"{kid}: Xero total {total} != Kantata {expected}")
        if doc.get("CurrencyCode") != invoice["currency"]:
            problems.append(f"{kid}: currency {doc.get('CurrencyCode')} != {invoice['currency']}")
        doc_id = doc.get("InvoiceID") or doc.get("CreditNoteID")
        if len(refs) != 1 or refs[0].get("status") != "successful":
            problems.append(f"{kid}: reference {refs}")
        elif str(refs[0].get("service_model_ref")) != str(doc_id):
            problems.append(f"{kid}: reference points at {refs[0].get('service_model_ref')}")
        elif str(refs[0].get("external_status") or "").upper() != doc["Status"]:
            problems.append(f"{kid}: external_status {refs[0].get('external_status')!r}")
    for reference in live:
        if reference.startswith("KS-"):
            problems.append(f"live Xero document {reference} matches no Kantata invoice")
    return Books(eligible, problems, docs)


def assert_exact(box: Sandbox, env: dict[str, str], tmp_path: Path) -> Books:
    """The books are exact, status agrees, and a rerun writes nothing anywhere."""
    books = check_books(box)
    assert books.problems == []
    assert books.eligible > 0
    report = status_json(env, tmp_path)
    assert report["counts"].get("failed", 0) == 0, report.get("failures")
    assert report["counts"].get("conflict", 0) == 0
    reset_stats(box)
    sync(env, tmp_path)
    assert xero_writes(box) == {}
    assert kantata_writes(box) == {}
    return books


def _generate(box: Sandbox, seed: int, invoices: int, credit: bool = True, **kwargs: Any) -> None:
    """Generated books Xero can hold whole (those it cannot are failed with a message: see
    tests/test_xero_target.py), and one credit (a negative invoice) among them."""
    generate(box.kantata, seed=seed, invoices=invoices, **kwargs)
    for invoice in box.kantata.state()["invoices"]:
        if not _held(box, invoice):
            box.kantata.update_invoice(int(invoice["id"]), draft=True, status="new")
            box.kantata.delete(int(invoice["id"]))
    if not credit:
        return
    workspace = int(box.kantata.state()["workspaces"][0]["id"])
    box.kantata.add_invoice(
        workspace_ids=[workspace],
        currency="USD",
        lines=[{"kind": "fixed_fee_item", "amount_in_cents": -4321, "taxable": False}],
    )


# ------------------------------------------------------------------ first sync and rerun


def test_first_sync_is_exact_and_a_rerun_writes_nothing(xbox: Sandbox, tmp_path: Path) -> None:
    _generate(xbox, 3, 40)
    env = xero_env(xbox, tmp_path)
    sync(env, tmp_path)
    first = xero_requests(xbox)
    books = assert_exact(xbox, env, tmp_path)
    # 50 invoices a request: a first sync of N makes at most 0.1 N + 10 Xero calls.
    assert sum(first.values()) <= 0.1 * books.eligible + 10, first
    # Ours listed once (the look-up before creating); the change poll after the pushes reads
    # what that listing and the writes' answers said, not a second listing.
    assert first["GET /api.xro/2.0/Invoices"] == 1, first
    assert first["GET /api.xro/2.0/CreditNotes"] == 1, first
    credits = [d for d in books.docs.values() if d["Type"] == "ACCRECCREDIT"]
    assert credits  # the generated books carry credits: they are checked too


@pytest.mark.parametrize("credit", [False, True], ids=["invoices", "with-a-credit-note"])
def test_a_quiet_cycle_is_one_kantata_and_one_xero_request(
    xbox: Sandbox, tmp_path: Path, credit: bool
) -> None:
    """Each `sync` is a new process: it reads Xero's changed invoices (one request), and its
    changed credit notes only when the books hold one; not the organisation for its links."""
    _generate(xbox, 5, 20, credit=credit)
    env = xero_env(xbox, tmp_path)
    sync(env, tmp_path)
    sync(env, tmp_path)
    reset_stats(xbox)
    sync(env, tmp_path)
    assert sum(xbox.kantata.stats.snapshot()["requests"].values()) == 1
    expected = {"GET /api.xro/2.0/Invoices": 1}
    if credit:
        expected["GET /api.xro/2.0/CreditNotes"] = 1
    assert xero_requests(xbox) == expected


# ------------------------------------------------------------------ the lifecycle


def _eligible_ids(box: Sandbox) -> list[int]:
    return [
        int(i["id"])
        for i in box.kantata.state()["invoices"]
        if not i["draft"]
        and i["status"] != "cancelled"
        and _held(box, i)
        and int(i["balance_in_cents"]) > 0
    ]


@pytest.mark.parametrize("edits", [True, False], ids=["edited", "refused"])
def test_updates_in_kantata_edit_the_xero_invoice_in_place(
    xbox: Sandbox, tmp_path: Path, edits: bool
) -> None:
    """Whether Xero edits the lines of an approved unpaid invoice is not documented: when it
    does, the same InvoiceID is edited; when it refuses, the old one is voided and made again,
    and the record and Kantata's reference follow the new one."""
    xbox.xero.allow_authorised_edits = edits
    _generate(xbox, 11, 12, draft_rate=0, cancelled_rate=0, paid_rate=0)
    env = xero_env(xbox, tmp_path)
    sync(env, tmp_path)
    before = check_books(xbox).docs
    changed = _eligible_ids(xbox)[:3]
    for kid in changed:
        xbox.kantata.update_invoice(
            kid,
            add_lines=[{"kind": "fixed_fee_item", "amount_in_cents": 12345, "taxable": True}],
        )
    reset_stats(xbox)
    sync(env, tmp_path)
    after = assert_exact(xbox, env, tmp_path).docs
    for kid in changed:
        old, new = before[str(kid)], after[str(kid)]
        assert Decimal(str(new["Total"])) > Decimal(str(old["Total"]))
        if edits:
            assert new["InvoiceID"] == old["InvoiceID"]  # edited in place
        else:
            assert new["InvoiceID"] != old["InvoiceID"]
            assert xbox.xero.docs["Invoices"][old["InvoiceID"]]["Status"] == "VOIDED"


def test_cancellations_before_and_after_payment(xbox: Sandbox, tmp_path: Path) -> None:
    _generate(xbox, 13, 12, draft_rate=0, cancelled_rate=0, paid_rate=0)
    env = xero_env(xbox, tmp_path)
    sync(env, tmp_path)
    docs = check_books(xbox).docs
    unpaid, paid = _eligible_ids(xbox)[:2]
    paid_doc = docs[str(paid)]
    xbox.xero.pay(paid_doc["InvoiceID"], Decimal(str(paid_doc["AmountDue"])))
    sync(env, tmp_path)  # the payment flows back as the external status
    xbox.kantata.cancel(unpaid)
    xbox.kantata.cancel(paid)
    reset_stats(xbox)
    sync(env, tmp_path, expect=None)

    gone = xbox.xero.docs["Invoices"][docs[str(unpaid)]["InvoiceID"]]
    assert gone["Status"] in ("VOIDED", "DELETED")
    # Kantata's reference says so in Xero's own word.
    (ref,) = [r for r in xbox.kantata.external_references(unpaid) if r["service_name"] == "xero"]
    assert ref["external_status"] == gone["Status"]
    assert ref["service_model_ref"] == gone["InvoiceID"]
    kept = xbox.xero.docs["Invoices"][paid_doc["InvoiceID"]]
    assert kept["Status"] == "PAID"  # untouched
    assert check_books(xbox, skip=frozenset({str(paid)})).problems == []
    report = status_json(env, tmp_path)
    conflicts = {str(c["kantata_invoice_id"]): c for c in report["conflicts"]}
    assert list(conflicts) == [str(paid)], report["conflicts"]
    assert "is PAID and was left untouched" in conflicts[str(paid)]["reason"]
    assert report["counts"]["conflict"] == 1
    assert report["counts"]["failed"] == 0
    # The unpaid one's reference is gone or says so; the paid one's still names Xero's status.
    refs = xbox.kantata.external_references(paid)
    assert [r for r in refs if r["service_name"] == "xero"]
    # Nothing more is written on a rerun.
    reset_stats(xbox)
    sync(env, tmp_path, expect=None)
    assert xero_writes(xbox) == {}
    assert xbox.xero.docs["Invoices"][paid_doc["InvoiceID"]]["Status"] == "PAID"


def test_a_hand_edit_in_xero_is_a_conflict_left_alone(xbox: Sandbox, tmp_path: Path) -> None:
    _generate(xbox, 17, 8, draft_rate=0, cancelled_rate=0, paid_rate=0)
    env = xero_env(xbox, tmp_path)
    sync(env, tmp_path)
    kid = _eligible_ids(xbox)[0]
    doc = check_books(xbox).docs[str(kid)]
    with xbox.xero.mutex:
        edited = xbox.xero.docs["Invoices"][doc["InvoiceID"]]
        line = edited["LineItems"][0]
        line["UnitAmount"] += 1
        line["LineAmount"] += line["Quantity"]
        edited["SubTotal"] += line["Quantity"]
        edited["Total"] += line["Quantity"]
        edited["AmountDue"] += line["Quantity"]
        edited["_updated"] = xbox.xero.clock.now()
    hand_total = edited["Total"]
    reset_stats(xbox)
    sync(env, tmp_path, expect=None)
    assert xero_writes(xbox) == {}
    assert xbox.xero.docs["Invoices"][doc["InvoiceID"]]["Total"] == hand_total
    report = status_json(env, tmp_path)
    assert report["counts"]["conflict"] == 1, report
    assert check_books(xbox, skip=frozenset({str(kid)})).problems == []


# ------------------------------------------------------------------ faults


def test_429s_with_retry_after_leave_everything_exactly_once(xbox: Sandbox, tmp_path: Path) -> None:
    _generate(xbox, 19, 60)
    env = xero_env(xbox, tmp_path)
    # Every Xero endpoint answers 429 (Retry-After: 1) to three requests in ten, the token
    # endpoint too: each sync still ends well, and the books are exact while the faults last.
    xbox.xero.set_faults(FaultConfig(seed=5, rate_429=0.3))
    for _ in range(2):
        sync(env, tmp_path)
    faults = xbox.xero.stats.snapshot()["faults"].get("429", 0)
    assert faults > 3
    assert check_books(xbox).problems == []
    xbox.xero.set_faults(None)
    assert_exact(xbox, env, tmp_path)


def test_answers_dropped_after_xero_committed_a_batch_duplicate_nothing(
    xbox: Sandbox, tmp_path: Path
) -> None:
    _generate(xbox, 23, 60)
    env = xero_env(xbox, tmp_path)
    xbox.xero.remember_keys = False  # the key's lifetime is not documented: no help from it
    # Half the answers to batches of invoices and credit notes (creates, approvals) are lost
    # after Xero committed them.
    documents = (f"{API}/Invoices", f"{API}/CreditNotes")
    xbox.xero.set_faults(FaultConfig(seed=3, drop_after_commit_rate=0.7, only_paths=documents))
    for _ in range(2):
        sync(env, tmp_path, expect=None)
    dropped = [w for w in xbox.xero.stats.snapshot()["writes"] if w["dropped"]]
    assert dropped, "no committed batch lost its answer"
    xbox.xero.set_faults(None)
    sync(env, tmp_path)
    assert_exact(xbox, env, tmp_path)


def test_sigkill_mid_backfill_then_a_new_sync_duplicates_nothing(
    xbox: Sandbox, tmp_path: Path
) -> None:
    _generate(xbox, 29, 150)
    # Slow Xero's answers so the kill lands between its batches.
    xbox.xero.set_faults(FaultConfig(seed=1, latency_ms=150))
    env = xero_env(xbox, tmp_path)
    with reaping() as started:
        process = CliProcess(["sync"], env, tmp_path, "killed")
        started.append(process)
        assert wait_until(
            lambda: (
                any(k.startswith(("PUT", "POST")) and "Invoices" in k for k in xero_writes(xbox))
                or process.poll() is not None
            ),
            60,
        )
        process.kill()
    assert process.proc.returncode == -signal.SIGKILL
    made = len(xbox.xero.state()["invoices"])
    assert 0 < made < len(_eligible_ids(xbox))  # killed mid-backfill
    xbox.xero.set_faults(None)
    sync(env, tmp_path)
    assert_exact(xbox, env, tmp_path)


def _state_files(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.iterdir() if p.name.startswith("state.db")]


def test_the_state_file_deleted_duplicates_nothing(xbox: Sandbox, tmp_path: Path) -> None:
    _generate(xbox, 31, 30)
    env = xero_env(xbox, tmp_path)
    sync(env, tmp_path)
    voided = _eligible_ids(xbox)[0]
    xbox.kantata.cancel(voided)
    sync(env, tmp_path)
    for path in _state_files(tmp_path):
        path.unlink()
    reset_stats(xbox)
    sync(env, tmp_path)
    assert xero_writes(xbox) == {}
    assert_exact(xbox, env, tmp_path)


def test_an_old_backup_restored_duplicates_nothing(xbox: Sandbox, tmp_path: Path) -> None:
    _generate(xbox, 37, 20, draft_rate=0, cancelled_rate=0, paid_rate=0)
    env = xero_env(xbox, tmp_path)
    sync(env, tmp_path)
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in _state_files(tmp_path):
        shutil.copy2(path, backup / path.name)
    ids = _eligible_ids(xbox)
    xbox.kantata.update_invoice(
        ids[0], add_lines=[{"kind": "fixed_fee_item", "amount_in_cents": 500, "taxable": True}]
    )
    workspace = int(xbox.kantata.state()["workspaces"][0]["id"])
    for n in range(3):
        xbox.kantata.add_invoice(
            workspace_ids=[workspace],
            currency="USD",
            lines=[{"kind": "fixed_fee_item", "amount_in_cents": 1000 * (n + 1), "taxable": True}],
        )
    sync(env, tmp_path)
    assert check_books(xbox).problems == []
    for path in _state_files(tmp_path):
        path.unlink()
    for path in backup.iterdir():
        shutil.copy2(path, tmp_path / path.name)
    reset_stats(xbox)
    sync(env, tmp_path)
    assert xero_writes(xbox) == {}
    assert_exact(xbox, env, tmp_path)


# ------------------------------------------------------------------ the day limit


def test_the_day_limit_mid_backfill_ends_the_cycle_cleanly(xbox: Sandbox, tmp_path: Path) -> None:
    _generate(xbox, 41, 200)
    env = xero_env(xbox, tmp_path, XERO_MAX_CONCURRENT="1")
    xbox.xero.per_day = 9  # settings and a few batches, then the day is spent
    out = sync(env, tmp_path)
    assert "Xero's daily limit reached; resumes after" in out
    report = status_json(env, tmp_path)
    assert report["counts"].get("failed", 0) == 0, report.get("failures")
    status = run_cli(["status"], env, tmp_path)
    assert "Xero's daily limit reached; resumes after" in status.stdout
    pushed = len([d for d in xbox.xero.state()["invoices"] if d["Status"] in LIVE])
    assert 0 < pushed < len(_eligible_ids(xbox))  # mid-backfill
    failed_refs = [
        r
        for i in xbox.kantata.state()["invoices"]
        for r in i.get("external_references", [])
        if r.get("status") == "failed"
    ]
    assert failed_refs == []
    # Still spent: the next sync tries Xero with one call, ends cleanly again.
    reset_stats(xbox)
    out = sync(env, tmp_path)
    assert "Xero's daily limit reached; resumes after" in out
    assert sum(xero_requests(xbox).values()) == 1, xero_requests(xbox)
    assert xero_writes(xbox) == {}
    # Tomorrow: the limit is lifted, the next sync finishes the job.
    xbox.xero.per_day = 100_000
    sync(env, tmp_path)
    assert_exact(xbox, env, tmp_path)


def test_an_invoice_voided_by_hand_in_xero_is_a_conflict_then_pushed_again(
    xbox: Sandbox, tmp_path: Path
) -> None:
    """Voided in Xero while Kantata's invoice stands: not `synced` any more, a conflict in
    `status` at once; `reconcile` lists it; `reconcile --apply` makes it again, once."""
    _generate(xbox, 53, 8, draft_rate=0, cancelled_rate=0, paid_rate=0)
    env = xero_env(xbox, tmp_path)
    sync(env, tmp_path)
    kid = _eligible_ids(xbox)[0]
    doc = check_books(xbox).docs[str(kid)]
    with xbox.xero.mutex:
        voided = xbox.xero.docs["Invoices"][doc["InvoiceID"]]
        voided["Status"] = "VOIDED"
        voided["_updated"] = xbox.xero.clock.now()
    reset_stats(xbox)
    sync(env, tmp_path, expect=1)
    assert xero_writes(xbox) == {}
    report = status_json(env, tmp_path)
    assert [c["kantata_invoice_id"] for c in report["conflicts"]] == [str(kid)]
    assert "was voided in Xero by hand" in report["conflicts"][0]["reason"]
    listed = run_cli(["reconcile"], env, tmp_path)
    assert str(kid) in listed.stdout, listed.stdout
    repaired = run_cli(["reconcile", "--apply"], env, tmp_path)
    assert_no_traceback(repaired.stdout, repaired.stderr)
    books = assert_exact(xbox, env, tmp_path)
    assert books.docs[str(kid)]["InvoiceID"] != doc["InvoiceID"]
    assert xbox.xero.docs["Invoices"][doc["InvoiceID"]]["Status"] == "VOIDED"
