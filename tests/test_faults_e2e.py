"""Fault injection end to end: the real CLI, in its own processes, against a misbehaving sandbox.

Every scenario ends the same way: the faults stop, one clean `sync` runs, and the books must
show exactly one Noko invoice per eligible Kantata invoice with its total, a successful
reference to it, nothing for drafts or cancelled invoices and no orphan expenses. Each prints one
line of figures (`pytest -s`): faults injected, kills survived, duplicates, losses, orphans.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from sandbox import FaultConfig, Sandbox, generate
from sandbox.kantata import REMOVED
from tests.e2e import cli_env, status_json
from tests.faults_support import (
    CliProcess,
    Tally,
    assert_no_traceback,
    audit,
    fast_env,
    lock_is_free,
    reaping,
    status_counts,
    sync,
    unfinished,
    wait_until,
)


def _calm(box: Sandbox) -> None:
    box.kantata.set_faults(None)
    box.noko.set_faults(None)


def _cycles_under_faults(
    env: dict[str, str], tmp_path: Path, tally: Tally, cycles: int
) -> list[int]:
    """Run `sync` `cycles` times while faults last: exit 0 or 1, never a traceback."""
    codes = []
    for _ in range(cycles):
        done = sync(env, tmp_path)
        tally.processes += 1
        assert done.returncode in (0, 1), done.stderr[-3000:]
        assert_no_traceback(done.stdout, done.stderr)
        codes.append(done.returncode)
    return codes


def _final_clean_sync(box: Sandbox, env: dict[str, str], tmp_path: Path, tally: Tally) -> None:
    """Faults off, one clean sync that exits 0, then the books must be exact."""
    _calm(box)
    done = sync(env, tmp_path)
    tally.processes += 1
    assert_no_traceback(done.stdout, done.stderr)
    books = tally.report(box)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert books.problems == []
    assert (books.duplicates, books.losses, books.orphans) == (0, 0, 0)
    counts = status_counts(tmp_path / "state.db")
    assert counts["synced"] == books.eligible
    assert counts["failed"] == counts["pending"] == counts["conflict"] == 0


def _dropped_writes(box: Sandbox) -> Counter[str]:
    """Writes that were committed and then got no answer, by `service METHOD template`."""
    out: Counter[str] = Counter()
    for service in (box.kantata, box.noko):
        for write in service.stats.snapshot()["writes"]:
            if write["dropped"]:
                out[f"{service.name} {write['method']} {write['template']}"] += 1
    return out


# ------------------------------------------------------------------------------ 1. 429 and 5xx


def test_429s_and_5xx_on_both_apis_end_with_exact_books(box: Sandbox, tmp_path: Path) -> None:
    """Empty Noko 429s, Kantata 429s with Retry-After and 500/502-HTML/503 on both: clean end."""
    generate(box.kantata, seed=101, invoices=60)
    tally = Tally("429 + 5xx")
    box.noko.set_faults(FaultConfig(seed=102, rate_429=0.25, rate_5xx=0.2, retry_after=False))
    box.kantata.set_faults(FaultConfig(seed=103, rate_429=0.2, rate_5xx=0.2))
    env = fast_env(cli_env(box, tmp_path))
    _cycles_under_faults(env, tmp_path, tally, 3)
    faults = box.noko.stats.snapshot()["faults"]
    assert faults.get("429", 0) > 20
    assert faults.get("502", 0) > 5
    assert box.kantata.stats.snapshot()["faults"].get("429", 0) > 0
    _final_clean_sync(box, env, tmp_path, tally)


# ------------------------------------------------------------------------------ 2. drops


def test_writes_committed_then_dropped_are_found_not_repeated(box: Sandbox, tmp_path: Path) -> None:
    """Noko creates and Kantata write-backs that commit and then drop the connection."""
    generate(box.kantata, seed=201, invoices=60)
    tally = Tally("commit, then drop")
    box.noko.set_faults(FaultConfig(seed=202, drop_after_commit_rate=0.3))
    box.kantata.set_faults(FaultConfig(seed=203, drop_after_commit_rate=0.3))
    env = fast_env(cli_env(box, tmp_path))
    _cycles_under_faults(env, tmp_path, tally, 3)
    dropped = _dropped_writes(box)
    assert dropped["noko POST /expenses"] > 10
    assert dropped["noko POST /invoices"] > 5
    assert dropped["kantata POST /external_references/create_or_update"] > 5
    tally.extra["dropped writes"] = dict(dropped)
    _final_clean_sync(box, env, tmp_path, tally)


# ------------------------------------------------------------------------------ 3. timeouts


@pytest.mark.parametrize(
    ("after_commit", "sleep_s"), [(True, 0.9), (False, 4.0)], ids=["answer-late", "apply-late"]
)
def test_timeouts_on_writes_leave_one_invoice_each(
    box: Sandbox, tmp_path: Path, after_commit: bool, sleep_s: float
) -> None:
    """The server sleeps past a 0.5 s client timeout, the write applied before or after it."""
    generate(box.kantata, seed=301, invoices=40)
    tally = Tally(f"timeouts ({'answer' if after_commit else 'apply'} late)")
    for seed, service in ((302, box.noko), (303, box.kantata)):
        service.set_faults(
            FaultConfig(
                seed=seed,
                timeout_rate=0.15,
                timeout_sleep_s=sleep_s,
                timeout_after_commit=after_commit,
            )
        )
    env = fast_env(cli_env(box, tmp_path), NOKO_TIMEOUT="0.5", KANTATA_TIMEOUT="0.5")
    _cycles_under_faults(env, tmp_path, tally, 2)
    assert box.noko.stats.snapshot()["faults"].get("timeout", 0) > 10
    time.sleep(sleep_s)  # writes the server applies late have all landed by now
    _final_clean_sync(box, env, tmp_path, tally)


# ------------------------------------------------------------------------------ 4. SIGKILL


@pytest.mark.slow
def test_repeated_sigkills_lose_nothing_and_repeat_nothing(box: Sandbox, tmp_path: Path) -> None:
    """300 invoices, 18 processes SIGKILLed at seeded moments, drops on; the lock passes at once."""
    generate(box.kantata, seed=401, invoices=300, same_updated_at=120)
    rng = random.Random(402)
    tally = Tally("SIGKILL")
    box.noko.set_faults(FaultConfig(seed=403, drop_after_commit_rate=0.05))
    box.kantata.set_faults(FaultConfig(seed=404, drop_after_commit_rate=0.05))
    env = fast_env(cli_env(box, tmp_path), NOKO_MAX_REQUESTS_PER_SECOND="250")
    database = tmp_path / "state.db"
    mid_push = 0
    finished = 0
    with reaping() as started:
        for number in range(18):
            command = ["sync"] if number % 5 == 4 else ["run", "--interval", "1"]
            process = CliProcess(command, env, tmp_path, f"kill-{number:02d}")
            started.append(process)
            tally.processes += 1
            if number % 3 == 0:
                # Killed while starting: within its first second.
                deadline = rng.uniform(0.1, 1.0)
            else:
                # Killed while working: a random moment after its cycle began.
                assert wait_until(lambda p=process: "cycle started" in p.stderr, 60)
                deadline = rng.uniform(0.1, 2.5)
            if wait_until(lambda p=process: p.poll() is not None, deadline):
                finished += 1
                assert process.wait() in (0, 1)
            else:
                process.kill()
                tally.kills += 1
                # The kernel dropped the dead process's flock: the next one needs no wait.
                assert lock_is_free(database)
                mid_push += unfinished(database) > 0
            assert_no_traceback(process.stderr)
            assert "another kantata-sync process" not in process.stderr
            assert "cycle skipped" not in process.stderr
    tally.extra["kills mid-push"] = mid_push
    tally.extra["processes that ended by themselves"] = finished
    assert tally.kills >= 15
    assert mid_push >= 3
    _final_clean_sync(box, env, tmp_path, tally)


# ------------------------------------------------------------------------------ 5. one writer


@pytest.mark.parametrize("lock_wait", ["0", "60"], ids=["refuse", "wait"])
def test_simultaneous_syncs_never_push_an_invoice_twice(
    box: Sandbox, tmp_path: Path, lock_wait: str
) -> None:
    """Three syncs started at once on one state file: one works, the others wait or refuse."""
    generate(box.kantata, seed=501, invoices=80)
    tally = Tally(f"3 simultaneous syncs (lock wait {lock_wait} s)")
    box.noko.set_faults(FaultConfig(seed=502, latency_ms=3))
    env = fast_env(cli_env(box, tmp_path), KANTATA_SYNC_LOCK_WAIT=lock_wait)
    with reaping() as started:
        for number in range(3):
            started.append(CliProcess(["sync"], env, tmp_path, f"same-{number}"))
        codes = [process.wait() for process in started]
        tally.processes += 3
        for process, code in zip(started, codes, strict=True):
            assert_no_traceback(process.stdout, process.stderr)
            if code == 1:
                assert lock_wait == "0"
                lines = process.stderr.strip().splitlines()
                assert lines[-1].startswith("kantata-sync: another kantata-sync process (pid ")
                assert "try again when it has finished" in lines[-1]
            else:
                assert code == 0, process.stderr[-2000:]
    assert 0 in codes
    creates = Counter(
        str(write["body"]["reference"])
        for write in box.noko.stats.snapshot()["writes"]
        if write["method"] == "POST" and write["template"] == "/invoices"
    )
    assert creates
    assert max(creates.values()) == 1
    tally.extra["exit codes"] = sorted(codes)
    _final_clean_sync(box, env, tmp_path, tally)


# ------------------------------------------------------------------------------ 6. bad input


def _eligible(box: Sandbox) -> list[int]:
    return [
        i
        for i in box.kantata.invoice_ids()
        if not box.kantata.invoice_state(i)["draft"]
        and box.kantata.invoice_state(i)["status"] != "cancelled"
    ]


def _with_line(box: Sandbox, ids: list[int], kind: str, taken: set[int]) -> int:
    for invoice_id in ids:
        state = box.kantata.invoice_state(invoice_id)
        if invoice_id not in taken and any(line["kind"] == kind for line in state["lines"]):
            taken.add(invoice_id)
            return invoice_id
    raise AssertionError(f"no invoice with a {kind} line")


def test_malformed_invoices_fail_alone_with_invoice_and_field_named(
    box: Sandbox, tmp_path: Path
) -> None:
    """Missing field, unknown currency, dangling line id, negative minutes, bad amounts."""
    generate(box.kantata, seed=601, invoices=40)
    tally = Tally("malformed invoices")
    eligible = _eligible(box)
    taken: set[int] = set()
    victims: dict[int, str] = {}

    def pick(kind: str | None = None) -> int:
        if kind is not None:
            return _with_line(box, eligible, kind, taken)
        invoice_id = next(i for i in eligible if i not in taken)
        taken.add(invoice_id)
        return invoice_id

    victim = pick()
    box.kantata.corrupt_invoice(victim, "updated_at", REMOVED)
    victims[victim] = "updated_at"
    victim = pick()
    box.kantata.corrupt_invoice(victim, "currency", REMOVED)
    victims[victim] = "currency"
    victim = pick()
    box.kantata.corrupt_invoice(victim, "currency", "XXX")
    victims[victim] = "currency"
    victim = pick("time_entry")
    ids = box.kantata.invoice_state(victim)["time_entry_ids"]
    box.kantata.corrupt_invoice(victim, "time_entry_ids", [*ids, "99999999"])
    victims[victim] = "time_entry_ids"
    victim = pick("time_entry")
    box.kantata.corrupt_line(victim, "time_in_minutes", -30)
    victims[victim] = "time_in_minutes"
    victim = pick("additional_item")
    box.kantata.corrupt_line(victim, "amount_in_cents", Decimal("1250.5"))
    victims[victim] = "amount_in_cents"
    victim = pick("additional_item")
    box.kantata.corrupt_line(victim, "amount_in_cents", 10**13 + 1)
    victims[victim] = "amount_in_cents"
    victim = pick("time_entry")
    box.kantata.corrupt_line(victim, "rate_in_cents", REMOVED)
    victims[victim] = "rate_in_cents"

    env = fast_env(cli_env(box, tmp_path))
    done = sync(env, tmp_path)
    tally.processes += 1
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    assert_no_traceback(done.stdout, done.stderr)
    report = status_json(env, tmp_path)
    failed = {f["kantata_invoice_id"]: f["error"] for f in report["failures"]}
    assert set(failed) == {str(v) for v in victims}
    for invoice_id, field in victims.items():
        error = failed[str(invoice_id)]
        assert f"invoice {invoice_id}" in error, error
        assert field in error, error
        refs = box.kantata.external_references(invoice_id)
        assert [r["status"] for r in refs] == ["failed"], refs
        assert field in refs[0]["external_message"]
    assert report["counts"]["failed"] == len(victims)
    assert {f["error_kind"] for f in report["failures"]} == {"mapping"}
    assert report["counts"]["synced"] == len(eligible) - len(victims)
    writes = len(box.noko.stats.snapshot()["writes"])
    again = sync(env, tmp_path)
    tally.processes += 1
    assert again.returncode == 1
    assert_no_traceback(again.stdout, again.stderr)
    assert len(box.noko.stats.snapshot()["writes"]) == writes, "a bad invoice is not hammered"
    tally.extra["refused as malformed"] = len(victims)
    books = tally.report(box, refused=set(victims))
    assert books.problems == []
    assert (books.duplicates, books.losses, books.orphans) == (0, 0, 0)


@pytest.mark.parametrize("kind", ["html", "json"])
def test_a_garbled_kantata_page_aborts_the_run_in_one_line(
    box: Sandbox, tmp_path: Path, kind: str
) -> None:
    """A 200 HTML proxy page or cut-off JSON instead of the invoice list: exit 1, one line."""
    generate(box.kantata, seed=611, invoices=30)
    tally = Tally(f"garbled Kantata page ({kind})")
    env = fast_env(cli_env(box, tmp_path), KANTATA_SYNC_HTTP_MAX_ATTEMPTS="3")
    box.kantata.garble_pages(1000, kind)
    done = sync(env, tmp_path)
    tally.processes += 1
    assert done.returncode == 1
    assert_no_traceback(done.stdout, done.stderr)
    summary = done.stdout.strip().splitlines()
    assert len(summary) == 1, done.stdout
    assert "reading Kantata failed" in summary[0]
    assert "not JSON" in summary[0]
    assert box.kantata.garbled == 3
    assert box.noko.stats.snapshot()["writes"] == []
    box.kantata.garble_pages(0)
    _final_clean_sync(box, env, tmp_path, tally)


# ------------------------------------------------------------------------------ 7. SIGTERM, SIGINT


def _noko_invoices(box: Sandbox) -> int:
    return len(box.noko.state()["invoices"])


@pytest.mark.parametrize(
    ("command", "signum"),
    [("run", signal.SIGTERM), ("backfill", signal.SIGTERM), ("run", signal.SIGINT)],
    ids=["run-SIGTERM", "backfill-SIGTERM", "run-SIGINT"],
)
def test_stop_signals_mid_push_end_cleanly_and_the_restart_repeats_nothing(
    box: Sandbox, tmp_path: Path, command: str, signum: signal.Signals
) -> None:
    """A stop signal while invoices are being pushed: the invoice in flight ends, exit as set."""
    generate(box.kantata, seed=701, invoices=120)
    tally = Tally(f"{signum.name} during {command}")
    box.noko.set_faults(FaultConfig(seed=702, drop_after_commit_rate=0.05, latency_ms=5))
    env = fast_env(cli_env(box, tmp_path), NOKO_MAX_REQUESTS_PER_SECOND="150")
    args = (
        ["run", "--interval", "60"] if command == "run" else ["backfill", "--since", "2000-01-01"]
    )
    with reaping() as started:
        process = CliProcess(args, env, tmp_path, command)
        started.append(process)
        tally.processes += 1
        assert wait_until(lambda: _noko_invoices(box) >= 10, 60)
        process.signal(signum)
        code = process.wait(60)
    assert_no_traceback(process.stdout, process.stderr)
    pushed_before = _noko_invoices(box)
    if command == "run":
        assert code == 0, process.stderr[-2000:]
    else:
        # The window was not finished: exit 1 and a line that says it was interrupted.
        assert code == 1, process.stderr[-2000:]
        assert "backfill interrupted" in process.stdout
    logs = [json.loads(line) for line in process.stderr.splitlines() if line.startswith("{")]
    assert any(entry.get("event", "").startswith("signal received") for entry in logs)
    books_partial = audit(box)
    assert books_partial.duplicates == 0
    assert books_partial.losses > 0, "the signal came too late to interrupt anything"
    tally.extra["invoices in Noko when it stopped"] = pushed_before
    restart = sync(env, tmp_path, *args) if command == "backfill" else None
    if restart is not None:
        tally.processes += 1
        assert restart.returncode == 0, restart.stderr[-2000:]
    _final_clean_sync(box, env, tmp_path, tally)


# ------------------------------------------------------------------------------ sandbox hooks


def test_sandbox_serves_corrupt_fields_and_garbled_pages_over_http(box: Sandbox) -> None:
    """The admin API removes a field, shows a dangling line id and garbles the next page."""
    generate(box.kantata, seed=621, invoices=3)
    invoice_id = box.kantata.invoice_ids()[0]
    admin = box.kantata_url.rsplit("/api/v1", 1)[0] + "/_sandbox"
    api = httpx.Client(
        base_url=box.kantata_url, headers={"Authorization": "Bearer sandbox-kantata-token"}
    )
    with api:
        removed = httpx.post(
            f"{admin}/invoices/{invoice_id}/corrupt",
            json={"target": "invoice", "field": "currency", "remove": True},
        )
        assert removed.status_code == 200
        dangling = httpx.post(
            f"{admin}/invoices/{invoice_id}/corrupt",
            json={"target": "invoice", "field": "expense_ids", "value": ["123"]},
        )
        assert dangling.status_code == 200
        body = api.get(f"/invoices/{invoice_id}.json", params={"include": "expenses"}).json()
        record = body["invoices"][str(invoice_id)]
        assert "currency" not in record
        assert record["expense_ids"] == ["123"]
        assert "123" not in body.get("expenses", {})
        garble = httpx.post(f"{admin}/garble", json={"count": 1, "kind": "html"})
        assert garble.status_code == 200
        page = api.get("/invoices.json")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert api.get("/invoices.json").json()["count"] == 3
    assert box.kantata.stats.snapshot()["faults"] == {"garbled-html": 1}


@pytest.mark.parametrize("after_commit", [True, False], ids=["answer-late", "apply-late"])
def test_sandbox_timeouts_apply_a_write_before_or_after_the_client_gives_up(
    box: Sandbox, after_commit: bool
) -> None:
    """`timeout_after_commit` applies the write at once; otherwise it lands after the sleep."""
    box.noko.set_faults(
        FaultConfig(timeout_rate=1.0, timeout_sleep_s=0.6, timeout_after_commit=after_commit)
    )
    headers = {"X-NokoToken": "sandbox-noko-token", "User-Agent": "kantata-sync-tests/1.0"}
    with (
        httpx.Client(base_url=box.noko_url, headers=headers, timeout=0.2) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.post("/projects", json={"name": "Late"})
    names = [p["name"] for p in box.noko.state()["projects"]]
    assert ("Late" in names) is after_commit
    assert wait_until(lambda: "Late" in [p["name"] for p in box.noko.state()["projects"]], 5)
    assert box.noko.stats.snapshot()["faults"] == {"timeout": 1}
