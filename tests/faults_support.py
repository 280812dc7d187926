"""Tools of the fault-injection suite: the real CLI in its own processes, fault figures from the
sandbox, and an audit of both systems' books (duplicates, losses, orphans)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sandbox import Sandbox
from tests.e2e import check_books, run_cli

SERVICE_NAME = "noko"
PREFIX = "KS-"
# Every CLI process is bounded; a cycle of the suite's sizes takes a few seconds.
PROCESS_TIMEOUT = 120.0


def fast_env(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The suite's settings on top of `cli_env`: fast retries, no lock waiting, quick pacing."""
    env = {
        **base,
        "KANTATA_SYNC_RETRY_INITIAL_DELAY": "0.01",
        "KANTATA_SYNC_LOCK_WAIT": "0",
        "NOKO_MAX_REQUESTS_PER_SECOND": "2000",
        "KANTATA_MAX_REQUESTS_PER_SECOND": "2000",
        "NOKO_BURST": "50",
        "KANTATA_SYNC_LOG_FORMAT": "json",
    }
    env.update(extra)
    return env


# ------------------------------------------------------------------------------ processes


class CliProcess:
    """One `kantata-sync` process started in the background, output kept in files."""

    def __init__(self, args: list[str], env: Mapping[str, str], cwd: Path, name: str) -> None:
        self.args = args
        self.out_path = cwd / f"{name}.out"
        self.err_path = cwd / f"{name}.err"
        self._out: IO[str] = self.out_path.open("w")
        self._err: IO[str] = self.err_path.open("w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "connector.faces.cli", *args],
            env=dict(env),
            cwd=cwd,
            stdout=self._out,
            stderr=self._err,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float = PROCESS_TIMEOUT) -> int:
        """The exit code; a process still running after `timeout` is killed and fails the test."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.args} still running after {timeout} s") from None
        finally:
            if self.proc.returncode is not None:
                self._close_files()

    def kill(self) -> None:
        """SIGKILL and reap."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close_files()

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signum)

    def _close_files(self) -> None:
        for handle in (self._out, self._err):
            if not handle.closed:
                handle.close()

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()


@contextlib.contextmanager
def reaping() -> Iterator[list[CliProcess]]:
    """A list to put started processes in; any still running at the end is killed."""
    started: list[CliProcess] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            else:
                process.wait(timeout=5)


def sync(env: Mapping[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One `sync` (or the given command) to its end; never more than PROCESS_TIMEOUT."""
    return run_cli(list(args) or ["sync"], env, cwd, timeout=PROCESS_TIMEOUT)


def assert_no_traceback(*outputs: str) -> None:
    for text in outputs:
        assert "Traceback" not in text, text[-3000:]


def wait_until(predicate: Any, timeout: float, step: float = 0.02) -> bool:
    """Poll `predicate` until true or `timeout` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


# ------------------------------------------------------------------------------ state file


def lock_is_free(database: Path) -> bool:
    """Whether the writer lock of the state database can be taken right now (and release it)."""
    lock_path = Path(f"{database}.lock")
    if not lock_path.exists():
        return True
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def unfinished(database: Path) -> int:
    """Invoices a process left between intent and completion (stage set), read-only."""
    if not database.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        try:
            row = db.execute("SELECT count(*) FROM invoices WHERE stage != ''").fetchone()
        except sqlite3.OperationalError:  # killed before the schema was created
            return 0
    return int(row[0])


def status_counts(database: Path) -> Counter[str]:
    """Invoices per status in the state database (what `status --json` counts), read-only."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT status, count(*) FROM invoices GROUP BY status").fetchall()
    return Counter({str(status): int(count) for status, count in rows})


# ------------------------------------------------------------------------------ figures


def faults_injected(box: Sandbox) -> Counter[str]:
    """Faults the two fakes injected so far, by `service:kind` (429, 500, 502, drop, ...)."""
    total: Counter[str] = Counter()
    for service in (box.kantata, box.noko):
        for kind, count in service.stats.snapshot()["faults"].items():
            total[f"{service.name}:{kind}"] += count
    return total


@dataclass
class Audit:
    """What the books say after a scenario."""

    eligible: int
    duplicates: int
    losses: int
    orphans: int
    problems: list[str] = field(default_factory=list)


def audit(box: Sandbox, refused: set[int] | None = None) -> Audit:
    """Duplicates (extra Noko invoices for one Kantata invoice, or for none), losses (eligible
    invoices without a Noko invoice or without a successful reference), orphan expenses.
    `refused` invoices (deliberately malformed) are expected to be missing: not losses."""
    expected = {str(i) for i in refused or ()}
    books = check_books(box, SERVICE_NAME, PREFIX)
    problems = [p for p in books.problems if p.split(":")[0] not in expected]
    kantata = box.kantata.state()["invoices"]
    per_reference = Counter(str(inv["reference"]) for inv in box.noko.state()["invoices"])
    duplicates = sum(n - 1 for n in per_reference.values() if n > 1)
    losses = 0
    known: set[str] = set()
    for invoice in kantata:
        reference = f"{PREFIX}{invoice['id']}"
        known.add(reference)
        if invoice["draft"] or invoice["status"] == "cancelled":
            duplicates += per_reference.get(reference, 0)  # pushed although not eligible
            continue
        refs = [
            r
            for r in invoice.get("external_references", [])
            if r["service_name"] == SERVICE_NAME and r.get("status") == "successful"
        ]
        missing = per_reference.get(reference, 0) == 0 or not refs
        if missing and str(invoice["id"]) not in expected:
            losses += 1
    duplicates += sum(n for ref, n in per_reference.items() if ref not in known)
    return Audit(books.eligible, duplicates, losses, books.orphans, problems)


@dataclass
class Tally:
    """The one-line figures of a scenario, printed for the closing note."""

    scenario: str
    faults: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    processes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self, books: Audit) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        parts = [
            f"faults injected {sum(self.faults.values())} ({kinds})",
            f"kills survived {self.kills}",
            f"duplicates {books.duplicates}",
            f"losses {books.losses}",
            f"orphans {books.orphans}",
            f"eligible {books.eligible}",
            f"CLI processes {self.processes}",
            *(f"{k} {v}" for k, v in self.extra.items()),
        ]
        return f"[faults-e2e] {self.scenario}: " + "; ".join(parts)

    def report(self, box: Sandbox, refused: set[int] | None = None) -> Audit:
        """Audit the books, print the summary line, return the audit."""
        self.faults = faults_injected(box)
        books = audit(box, refused)
        print(self.line(books))
        return books
