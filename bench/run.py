"""`make bench`: backfills of generated invoices against the sandbox, measured, in one table.

    python -m bench.run            # the whole benchmark (about 20 minutes on 2 cores)
    python -m bench.run --quick    # a one-minute subset with smaller N
    python -m bench.run --only inprocess --no-cap   # one part, without the time budget
    python -m bench.run --profile  # also profile the connector (cProfile, every thread)
    python -m bench.run --only xero   # the backfill into the fake Xero at Xero's real limits

The sandbox (fake Kantata and fake Noko) runs in this process; the connector runs in a child
process (`bench.child`) opened with `Settings` and `open_connector`, so its CPU time and peak
RSS are measured apart from the fakes. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.dispatch import DispatchServer
from bench.tap import TapCheck, check_tap
from bench.workload import Workload, populate
from bench.xero import XERO_LIMITS, XeroRun, xero_run, xero_targets
from connector.kantata.client import REFERENCE_UPSERT
from sandbox import FakeKantata, FakeNoko, FaultConfig, Sandbox
from tests.e2e import KANTATA_TOKEN, NOKO_TOKEN, check_books

ROOT = Path(__file__).resolve().parents[1]
PER_PAGE = 200
UNLIMITED = 1e9  # Settings wants a positive rate; this one never makes a request wait
DISPATCH_KANTATA = "http://127.0.0.1:9/api/v1"  # never connected to: the dispatch transport
DISPATCH_NOKO = "http://127.0.0.1:9/v2"  # answers instead (a failed hook fails loudly)


def _probe_cpus() -> str | None:
    """Why this process may not choose its CPUs (a system call filter, say), or None."""
    if not hasattr(os, "sched_setaffinity"):
        return "(this platform cannot keep a process on given CPUs)"
    try:
        os.sched_setaffinity(0, os.sched_getaffinity(0))
    except OSError as exc:
        return f"(the process may not choose its CPUs here: {exc.strerror or exc})"
    return None


def _pin(target: frozenset[int] | set[int]) -> None:
    """This process, every thread of it, on `target` (as `taskset -a -p` would)."""
    os.sched_setaffinity(0, target)
    with contextlib.suppress(OSError):
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                os.sched_setaffinity(int(task.name), target)


CPUS_REFUSED = _probe_cpus()
"""Why a process may not choose its CPUs on this machine, or None."""
CPUS = "one" if CPUS_REFUSED is None else "all"
"""Where the benchmark places the connector (and the naive baseline) in every run but one, as
an operator would with taskset or systemd's CPUAffinity=: `one` is the highest-numbered CPU.
Meanwhile the benchmark's own process (the sandbox, the fakes) moves to the other CPUs, so that
it does not share the connector's. One in-process run repeats with `all`, as the operating
system schedules it, for comparison. Where a process may not choose its CPUs, every run uses
`all`."""

WIDE_WORKERS = 64
"""Workers of the extra scaled run: enough requests in flight for the scaled rate's bound."""

# lookback (300 s) + clock skew (60 s), the defaults, and a second: the window is past.
QUIET_AFTER = "later:361"


@dataclass(frozen=True)
class Limits:
    """Rate limits (requests per second, None = none) and latency of both fake APIs."""

    noko: float | None
    kantata: float | None
    latency_ms: float
    burst: int = 5  # the sandbox's: a few requests slowed down, then empty 429s

    def label(self) -> str:
        if self.noko is None:
            return "no limit"
        return f"Noko {self.noko:g}/s, Kantata {self.kantata:g}/s, {self.latency_ms:g} ms"


REAL = Limits(noko=2.0, kantata=10.0, latency_ms=20)
SCALED = Limits(noko=2000.0, kantata=10_000.0, latency_ms=20)


@dataclass
class Row:
    """One line of the table."""

    scenario: str
    n: int
    wall: float
    kantata: int
    noko: int
    status_429: int
    cpu: float
    rss_peak_kb: int
    rss_start_kb: int | None
    quiet: bool = False
    pushed: int = 0
    bound: float | None = None
    stopped: bool = False
    handoff: float = 0.0
    """CPU seconds of the benchmark's in-process hand-off, taken off `cpu` in the table."""

    @property
    def own_cpu(self) -> float:
        """The connector's CPU: the process's, less the benchmark's hand-off."""
        return self.cpu - self.handoff

    @property
    def requests(self) -> int:
        return self.kantata + self.noko


@dataclass
class Run:
    """Everything one child run measured, with the sandbox's view of it."""

    label: str
    workload: Workload
    cycles: list[dict[str, Any]]
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    noko_needed: int | None = None
    kantata_needed: int | None = None
    projects: int | None = None
    sandbox_requests: int | None = None
    sandbox_429: int | None = None
    workers: int | None = None
    cpus: str = CPUS


class BenchError(RuntimeError):
    pass


def _progress(message: str, started: float) -> None:
    print(f"[{time.monotonic() - started:7.1f} s] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _apart(cpus: str) -> Iterator[list[int] | None]:
    """While a child runs on `cpus` (`one`: the highest-numbered CPU), keep this process (every
    thread) off the CPUs the child takes. Yields (the CPUs the child is placed on, all the
    CPUs) or None: the child inherits this process's narrowed set and places itself. Nothing
    changes for `all`, or with one CPU."""
    if cpus == "all" or CPUS_REFUSED is not None:
        yield None
        return
    allowed = frozenset(os.sched_getaffinity(0))
    taken = frozenset({max(allowed)})
    others = allowed - taken
    if not others:
        yield None
        return
    _pin(others)
    try:
        yield sorted(taken)
    finally:
        _pin(allowed)


def _child(job: dict[str, Any], log: Path, timeout: float) -> dict[str, Any]:
    cpus = str(job.setdefault("cpus", CPUS))
    with _apart(cpus) as placed:
        job["cpus_placed"] = placed
        return _spawn(job, log, timeout)


def _spawn(job: dict[str, Any], log: Path, timeout: float) -> dict[str, Any]:
    with log.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "bench.child"],
            input=json.dumps(job),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            check=False,
        )
    if done.returncode != 0 or not done.stdout.strip():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise BenchError(f"the connector process failed ({done.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _noko_needed(noko: FakeNoko) -> tuple[int, int]:
    """Noko requests truly needed for what Noko holds now: one per expense on a KS- invoice,
    one per such invoice, one lookup per project they book on. Also the project count."""
    state = noko.state()
    invoices = [i for i in state["invoices"] if str(i.get("reference", "")).startswith("KS-")]
    expenses = [
        e for e in state["expenses"] if e.get("invoice") and "[KS-" in str(e.get("description"))
    ]
    projects = {e["project"]["id"] for e in expenses if isinstance(e.get("project"), dict)}
    return len(invoices) + len(expenses) + len(projects), len(projects)


def _rows(run: Run, limits: Limits | None) -> None:
    for index, cycle in enumerate(run.cycles):
        quiet = cycle["kind"] != "backfill"
        counts = cycle.get("counts", {})
        pushed = int(counts.get("pushed", 0))
        label = run.label
        if quiet:
            if index == 1:
                label = (
                    f"  sync {cycle['later'] / 60:.0f} min later (reads the write-backs)"
                    if cycle.get("later")
                    else "  sync right after (reads the write-backs)"
                )
            else:
                label = "  sync again, nothing new"
        row = Row(
            scenario=label,
            n=run.workload.eligible if quiet else pushed,
            wall=cycle["wall"],
            kantata=cycle["kantata"]["requests"],
            noko=cycle["noko"]["requests"],
            status_429=cycle["kantata"]["status_429"] + cycle["noko"]["status_429"],
            cpu=cycle["cpu"],
            rss_peak_kb=cycle["rss_peak_kb"],
            rss_start_kb=cycle.get("rss_start_kb"),
            quiet=quiet,
            pushed=pushed,
            stopped=cycle.get("outcome") == "interrupted",
            handoff=float(cycle.get("handoff_cpu", 0.0)),
        )
        if not quiet and limits is not None and limits.noko and limits.kantata:
            bounds = []
            if run.noko_needed is not None:
                bounds.append(run.noko_needed / limits.noko)
            if run.kantata_needed is not None:
                bounds.append(run.kantata_needed / limits.kantata)
            row.bound = max(bounds) if bounds else None
        run.rows.append(row)


def http_run(
    label: str,
    n: int,
    limits: Limits,
    tmp: Path,
    *,
    seed: int,
    cycles: tuple[str, ...] = ("backfill", QUIET_AFTER, "sync", "sync"),
    mode: str = "connector",
    workers: int | None = None,
    timeout: float = 3600,
) -> Run:
    """A backfill (and quiet cycles) over real HTTP on loopback, latency and limits on both
    sides; the books are checked afterwards with the end-to-end tests' invariant checker."""
    box = Sandbox(
        kantata_faults=FaultConfig(latency_ms=limits.latency_ms),
        noko_faults=FaultConfig(latency_ms=limits.latency_ms),
        noko_rate_limit=limits.noko,
        noko_burst=limits.burst,
        kantata_rate_limit=limits.kantata,
        kantata_burst=limits.burst,
    )
    workload = populate(box.kantata, box.noko, n, seed=seed)
    projects_before = len(box.noko.state()["projects"])
    settings: dict[str, Any] = {
        "noko_max_requests_per_second": limits.noko or UNLIMITED,
        "kantata_max_requests_per_second": limits.kantata or UNLIMITED,
    }
    if workers is not None:
        settings["kantata_sync_workers"] = workers
    name = f"{mode}-{label}-{n}".replace(" ", "_").replace("/", "")
    with box:
        job = {
            "mode": mode,
            "kantata_url": box.kantata_url,
            "noko_url": box.noko_url,
            "kantata_token": KANTATA_TOKEN,
            "noko_token": NOKO_TOKEN,
            "database": str(tmp / f"{name}.db"),
            "settings": settings,
            "cycles": list(cycles) if mode == "connector" else ["backfill"],
        }
        out = _child(job, tmp / f"{name}.log", timeout)
        books = check_books(box)
        needed, projects = _noko_needed(box.noko)
        # A project the connector had to create (the invoices' own projects exist already; a
        # line that does not name its project goes on a combined one) costs its create, and a
        # new state file is matched against Noko before anything is created: one listing of
        # the connector's invoices per 1,000.
        created = len(box.noko.state()["projects"]) - projects_before
        if mode == "connector":
            needed += created + math.ceil(workload.eligible / 1000)
        k_stats = box.kantata.stats.snapshot()
        n_stats = box.noko.stats.snapshot()
    run = Run(label, workload, out["cycles"], workers=out.get("workers"))
    run.problems = list(books.problems)
    if books.eligible != workload.eligible:
        run.problems.append(f"{books.eligible} eligible in Kantata, {workload.eligible} built")
    run.noko_needed = needed
    run.projects = projects
    run.kantata_needed = math.ceil(workload.total / PER_PAGE) + workload.eligible
    run.sandbox_requests = k_stats["total"] + n_stats["total"]
    run.sandbox_429 = k_stats["count_429"] + n_stats["count_429"]
    _rows(run, limits)
    return run


def dispatch_run(
    n: int,
    tmp: Path,
    *,
    seed: int,
    time_cap: float | None,
    profile: str | None = None,
    cpus: str = CPUS,
) -> Run:
    """A backfill without latency, limits or HTTP: the connector process hands every request
    to the fakes in this process (`bench.dispatch`)."""
    kantata = FakeKantata()
    noko = FakeNoko()
    workload = populate(kantata, noko, n, seed=seed)
    kantata.public_url = DISPATCH_KANTATA
    noko.public_url = DISPATCH_NOKO
    socket_path = str(tmp / f"dispatch-{n}-{cpus}.sock")
    server = DispatchServer(socket_path, {"kantata": kantata, "noko": noko})
    try:
        job = {
            "mode": "connector",
            "kantata_url": DISPATCH_KANTATA,
            "noko_url": DISPATCH_NOKO,
            "kantata_token": KANTATA_TOKEN,
            "noko_token": NOKO_TOKEN,
            "database": str(tmp / f"dispatch-{n}-{cpus}{'-profile' if profile else ''}.db"),
            "settings": {
                "noko_max_requests_per_second": UNLIMITED,
                "kantata_max_requests_per_second": UNLIMITED,
            },
            "cpus": cpus,
            "cycles": ["backfill"],
            "dispatch": socket_path,
            "time_cap": time_cap,
            "profile": profile,
        }
        out = _child(job, tmp / f"dispatch-{n}-{cpus}.log", timeout=7200)
    finally:
        server.close()
    label = (
        "in-process, no HTTP"
        + (f", connector on CPUs {cpus}" if cpus != CPUS else "")
        + (" (profiled)" if profile else "")
    )
    run = Run(label, workload, out["cycles"], workers=out.get("workers"), cpus=cpus)
    cycle = run.cycles[0]
    writes = cycle["kantata"]["by_endpoint"].get(REFERENCE_UPSERT, 0)
    pushed = int(cycle["counts"].get("pushed", 0))
    if cycle["outcome"] != "interrupted" and pushed != workload.eligible:
        run.problems.append(f"pushed {pushed} of {workload.eligible}")
    if writes != pushed:
        run.problems.append(f"{writes} write-backs for {pushed} pushed invoices")
    if cycle["failed"]:
        run.problems.append(f"{cycle['failed']} invoices failed")
    _rows(run, None)
    del kantata, noko, server
    gc.collect()
    return run


# ------------------------------------------------------------------------------- the table


def _int(value: float) -> str:
    return f"{value:,.0f}"


def _per(total: int, n: int) -> str:
    return f"{_int(total)} ({total / n:.2f})" if n else _int(total)


def _cells(row: Row) -> list[str]:
    peak = row.rss_peak_kb / 1024
    delta = (
        ""
        if row.rss_start_kb is None
        else f" ({max(0.0, (row.rss_peak_kb - row.rss_start_kb) / 1024):+.0f})"
    )
    if row.quiet:
        return [
            row.scenario,
            _int(row.n),
            f"{row.wall:.2f}",
            "—",
            _int(row.kantata),
            _int(row.noko),
            _int(row.status_429),
            "—",
            "—",
            f"{row.own_cpu * 1000:.0f} /cycle",
            _handoff_cell(row, 1),
            f"{peak:.0f}{delta}",
        ]
    share = f"{100 * row.status_429 / row.requests:.1f}%" if row.requests else "0%"
    n = row.pushed
    return [
        row.scenario + (" (stopped by time cap)" if row.stopped else ""),
        _int(n),
        f"{row.wall:.1f}",
        f"{n / row.wall:.1f}" if row.wall else "—",
        _per(row.kantata, n),
        _per(row.noko, n),
        f"{_int(row.status_429)} ({share})",
        f"{row.bound:.1f}" if row.bound is not None else "—",
        f"{100 * row.bound / row.wall:.0f}%" if row.bound is not None and row.wall else "—",
        f"{1000 * row.own_cpu / n:.2f}" if n else "—",
        _handoff_cell(row, n),
        f"{peak:.0f}{delta}",
    ]


def _handoff_cell(row: Row, n: int) -> str:
    return f"{1000 * row.handoff / n:.2f}" if row.handoff and n else "—"


HEADER = [
    "scenario",
    "N",
    "wall s",
    "invoices/s",
    "Kantata req (/inv)",
    "Noko/Xero req (/inv)",
    "429s (share)",
    "bound s",
    "of bound",
    "CPU ms/inv",
    "hand-off ms/inv",
    "peak RSS MB (+cycle)",
]


def table(rows: list[Row]) -> str:
    cells = [HEADER] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    out = []
    for index, line in enumerate(cells):
        out.append(
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
            + " |"
        )
        if index == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


# ------------------------------------------------------------------------------- the verdicts


def _endpoint(cycle: dict[str, Any], side: str, key: str) -> int:
    return int(cycle[side].get("by_endpoint", {}).get(key, 0))


def rss_growth(cycle: dict[str, Any]) -> float | None:
    """RSS growth in KB per invoice handled: least squares over the samples taken while
    invoices were being handled, after the first fifth of them (the start-up transient left
    out). The cycle's tail, once every invoice is handled (reading Noko's changes a page at a
    time), is left out too: it holds one page whatever N is, and shows in the peak instead.
    None with too few samples."""
    series = cycle.get("rss_series") or []
    if not series:
        return None
    last = series[-1][0]
    points = [(done, rss) for done, rss in series if 0.2 * last <= done < last]
    if len(points) < 5 or points[-1][0] == points[0][0]:
        return None
    return float(statistics.linear_regression(*zip(*points, strict=True)).slope)


def targets(
    http_runs: list[Run], real: Run | None, dispatch_runs: list[Run], wide: Run | None = None
) -> list[str]:
    """Each target of the issue with the figure that shows it met or missed."""
    lines: list[str] = []

    def verdict(ok: bool) -> str:
        return "met   " if ok else "MISSED"

    for run in http_runs:
        backfill = run.cycles[0]
        pushed = int(backfill["counts"].get("pushed", 0))
        pages = _endpoint(backfill, "kantata", "GET /invoices.json")
        expected_pages = math.ceil(run.workload.total / PER_PAGE)
        singles = _endpoint(backfill, "kantata", "GET /invoices/{id}.json")
        writes = _endpoint(backfill, "kantata", REFERENCE_UPSERT)
        lines.append(
            f"{verdict(pages == expected_pages and not singles)} Kantata reads, {run.label} "
            f"N={pushed:,}: {pages} page requests for {run.workload.total:,} invoices "
            f"(pages of {PER_PAGE} with lines: {expected_pages}), {singles} single reads"
        )
        lines.append(
            f"{verdict(writes == pushed and not run.problems)} write-backs, N={pushed:,}: "
            f"{writes:,} for {pushed:,} pushed, none for {run.workload.skipped} skipped "
            f"(books checked: {len(run.problems)} problems)"
        )
        if run.noko_needed is not None:
            sent = backfill["noko"]["requests"]
            extra = sent - run.noko_needed
            lookups = _endpoint(backfill, "noko", "GET /projects")
            lines.append(
                f"{verdict(extra <= math.ceil(pushed / 1000) + 1 and lookups == run.projects)} "
                f"Noko requests, N={pushed:,}: {sent:,} sent, {run.noko_needed:,} needed "
                f"(expenses + invoices + {run.projects} project lookups), {extra:+,} "
                f"({lookups} project lookups for {run.projects} projects)"
            )
        for cycle in run.cycles[1:]:
            requests = (
                f"{cycle['kantata']['requests']} Kantata and {cycle['noko']['requests']} Noko "
                f"requests, {sum(cycle['counts'].values()):,} invoices re-read, "
                f"{cycle['wall']:.2f} s"
            )
            if cycle is run.cycles[1]:
                lines.append(
                    f"note   first cycle after the backfill, N={pushed:,}, "
                    f"{cycle.get('later', 0):.0f} s later (the write-backs are changes in "
                    f"Kantata): {requests}"
                )
            else:
                quiet = cycle["kantata"]["requests"] == 1 and cycle["noko"]["requests"] == 1
                lines.append(f"{verdict(quiet)} quiet cycle, N={pushed:,}, nothing new: {requests}")
    row = real.rows[0] if real is not None else None
    if row is not None and row.bound is not None:
        share = row.status_429 / row.requests if row.requests else 0.0
        lines.append(
            f"{verdict(row.bound / row.wall >= 0.95)} throughput at Noko's 2 req/s: "
            f"{100 * row.bound / row.wall:.1f}% of the bound ({row.bound:.1f} s of "
            f"{row.wall:.1f} s)"
        )
        lines.append(
            f"{verdict(share < 0.01)} 429s at Noko's 2 req/s: {row.status_429} of "
            f"{row.requests} requests ({100 * share:.2f}%)"
        )
    for run in [*http_runs, *([wide] if wide else ())]:
        r = run.rows[0]
        if run is not real and r.bound is not None and r.wall:
            share = r.status_429 / r.requests if r.requests else 0.0
            lines.append(
                f"note   throughput, {run.label} N={r.pushed:,}: "
                f"{100 * r.bound / r.wall:.0f}% of the bound with {run.workers} workers, "
                f"{100 * share:.2f}% of requests answered 429"
            )
        if r.pushed >= 1000:
            per = 1000 * r.cpu / r.pushed
            lines.append(
                f"{verdict(per < 5)} CPU with HTTP on loopback, {run.label} N={r.pushed:,}: "
                f"{per:.2f} ms per invoice (target < 5)"
            )
    memory = []
    for run in dispatch_runs:
        r = run.rows[0]
        if not r.pushed:
            continue
        per = 1000 * r.own_cpu / r.pushed
        if run.cpus != CPUS:
            lines.append(
                f"       for comparison, connector on CPUs {run.cpus}: CPU without the HTTP "
                f"stack, N={r.pushed:,}: {per:.2f} ms per invoice; the process spent "
                f"{1000 * r.cpu / r.pushed:.2f}, of which {1000 * r.handoff / r.pushed:.2f} in "
                "the hand-off"
            )
            continue
        memory.append((r.pushed, r.rss_peak_kb / 1024, rss_growth(run.cycles[0])))
        lines.append(
            f"{verdict(per < 1 and not run.problems)} CPU without the HTTP stack, "
            f"N={r.pushed:,}: {per:.2f} ms per invoice (target < 1); the process spent "
            f"{1000 * r.cpu / r.pushed:.2f}, of which {1000 * r.handoff / r.pushed:.2f} in the "
            "benchmark's hand-off to the fakes"
            + (f"; problems: {'; '.join(run.problems)}" if run.problems else "")
        )
    if memory:
        goal = max(run.workload.eligible for run in dispatch_runs if run.cpus == CPUS)
        # The longest run has the most samples: its slope is the one to trust.
        done, peak, growth = max(memory, key=lambda m: m[0])
        slope = growth or 0.0
        projected = peak + slope * (goal * 1.05 - done) / 1024  # 5% skipped invoices too
        # Flat: under 10 MB more over 100,000 invoices, and the largest run's peak within
        # 20 MB of the smallest's.
        spread = max(m[1] for m in memory) - min(m[1] for m in memory)
        flat = slope < 0.1 and spread < 20
        lines.append(
            f"{verdict(projected < 200 and flat)} peak memory: "
            + ", ".join(f"{m[1]:.0f} MB after {m[0]:,} invoices" for m in memory)
            + f"; RSS grows {slope:.2f} KB per invoice handled, peaks differ by "
            + f"{spread:.0f} MB"
            + ("" if flat else " (not flat)")
            + (
                f", so about {projected:.0f} MB at {goal:,}"
                if done < goal
                else f"; {peak:.0f} MB at {goal:,}"
            )
        )
    return lines


def side_by_side(naive: Run, connector: Run) -> list[str]:
    a, b = naive.rows[0], connector.rows[0]
    n_a, n_b = max(a.pushed, 1), max(b.pushed, 1)
    return [
        f"naive / connector, N={b.pushed}, {SCALED.label()} (same data, same sandbox settings):",
        f"  wall time          {a.wall:8.1f} s  / {b.wall:8.1f} s  = {a.wall / b.wall:5.1f}x",
        f"  Kantata req/inv    {a.kantata / n_a:8.2f}    / {b.kantata / n_b:8.2f}    = "
        f"{(a.kantata / n_a) / (b.kantata / n_b):5.1f}x",
        f"  Noko req/inv       {a.noko / n_a:8.2f}    / {b.noko / n_b:8.2f}    = "
        f"{(a.noko / n_a) / (b.noko / n_b):5.1f}x",
        f"  CPU ms/inv         {1000 * a.cpu / n_a:8.2f}    / {1000 * b.cpu / n_b:8.2f}    = "
        f"{(a.cpu / n_a) / (b.cpu / n_b):5.1f}x   (the naive one keeps no state file)",
        f"  at Noko's 2 req/s  {a.noko / 2 / 60:8.1f} min / {b.noko / 2 / 60:8.1f} min "
        f"(Noko requests / 2, per {b.pushed} invoices)",
        f"  books: naive {len(naive.problems)} problems, connector {len(connector.problems)}",
    ]


def print_profile(path: str, limit: int = 25) -> None:
    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(r"connector|mappings|sqlalchemy|httpx", limit)


# ------------------------------------------------------------------------------- main


@dataclass(frozen=True)
class Plan:
    real: int
    scaled: tuple[int, ...]
    side: int
    dispatch: tuple[int, ...]
    budget: float
    xero: int = 1_000


FULL = Plan(real=20, scaled=(1_000, 10_000), side=200, dispatch=(10_000, 100_000), budget=1200)
QUICK = Plan(real=2, scaled=(100,), side=20, dispatch=(300, 1_000), budget=70, xero=100)


SECTIONS = ("real", "scaled", "side", "tap", "inprocess", "xero")


def _xero_rows(run: XeroRun) -> list[Row]:
    """The Xero run's lines of the table: the Xero requests in the Noko/Xero column, the bound
    the longer of Kantata's (pages and write-backs / 10 per s) and Xero's (requests / 1 per s)."""
    rows = []
    for index, cycle in enumerate(run.cycles):
        quiet = cycle["kind"] != "backfill"
        label = run.label
        if quiet:
            label = (
                f"  sync {cycle['later'] / 60:.0f} min later (reads the write-backs)"
                if index == 1 and cycle.get("later")
                else "  sync again, nothing new"
            )
        seen = run.breakdowns[index]
        pushed = int(cycle["counts"].get("pushed", 0))
        row = Row(
            scenario=label,
            n=run.eligible if quiet else pushed,
            wall=cycle["wall"],
            kantata=cycle["kantata"]["requests"],
            noko=cycle["xero"]["requests"],
            status_429=cycle["kantata"]["status_429"] + seen.limited,
            cpu=cycle["cpu"],
            rss_peak_kb=cycle["rss_peak_kb"],
            rss_start_kb=cycle.get("rss_start_kb"),
            quiet=quiet,
            pushed=pushed,
        )
        if not quiet:
            row.bound = max(run.bounds())
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a one-minute subset")
    parser.add_argument(
        "--only",
        metavar="SECTION[,SECTION]",
        help=f"run only these parts: {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--no-cap",
        action="store_true",
        help="let the in-process runs finish whatever the time budget",
    )
    parser.add_argument("--profile", action="store_true", help="also profile an in-process run")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args(argv)
    sections = set(SECTIONS if not args.only else args.only.split(","))
    if not sections <= set(SECTIONS):
        parser.error(f"--only takes {', '.join(SECTIONS)}")
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    seed = args.seed
    real: Run | None = None
    http_runs: list[Run] = []
    wide: Run | None = None
    side: tuple[Run, Run] | None = None
    tap: TapCheck | None = None
    dispatch_runs: list[Run] = []
    xero: XeroRun | None = None
    with tempfile.TemporaryDirectory(prefix="kantata-sync-bench-") as name:
        tmp = Path(name)
        if "real" in sections:
            _progress(f"backfill of {plan.real} invoices at {REAL.label()}", started)
            real = http_run(f"backfill, {REAL.label()}", plan.real, REAL, tmp, seed=seed)
            http_runs.append(real)
        for n in plan.scaled if "scaled" in sections else ():
            _progress(f"backfill of {n:,} invoices at {SCALED.label()}", started)
            # The daemon's next cycle, which reads the backfill's write-backs (changes in
            # Kantata), then one with nothing new.
            quiet = (QUIET_AFTER, "sync", "sync")
            http_runs.append(
                http_run(
                    f"backfill, {SCALED.label()}",
                    n,
                    SCALED,
                    tmp,
                    seed=seed,
                    cycles=("backfill", *quiet),
                )
            )
        if "scaled" in sections and plan.scaled:
            # The bound at the scaled limits is a matter of requests in flight: Noko's rate times
            # the round trip (2,000/s x 20 ms = 40), where the default 8 workers keep about 8.
            n = plan.scaled[-1]
            _progress(
                f"backfill of {n:,} invoices at {SCALED.label()}, {WIDE_WORKERS} workers", started
            )
            wide = http_run(
                f"backfill, {SCALED.label()}, KANTATA_SYNC_WORKERS={WIDE_WORKERS}",
                n,
                SCALED,
                tmp,
                seed=seed,
                cycles=("backfill",),
                workers=WIDE_WORKERS,
            )
        if "side" in sections:
            _progress(f"naive baseline and connector, {plan.side} invoices", started)
            naive = http_run("naive baseline", plan.side, SCALED, tmp, seed=seed, mode="naive")
            same = http_run(
                "connector, same as naive", plan.side, SCALED, tmp, seed=seed, cycles=("backfill",)
            )
            side = (naive, same)
        if "tap" in sections:
            _progress("tap-mavenlink: can it be pointed at the sandbox?", started)
            tap = check_tap()
        for index, n in enumerate(plan.dispatch if "inprocess" in sections else ()):
            cap = None
            if index and not args.no_cap:
                # The first (smallest) run always completes; the larger ones share what is
                # left of the time budget in proportion to N, populating the fakes (about
                # 0.4 ms per invoice) included, and stop where their time runs out.
                remaining = plan.budget - (time.monotonic() - started)
                weight = n / sum(plan.dispatch[index:])
                cap = max(10.0, remaining * weight - 0.0004 * n - 5)
            _progress(
                f"in-process backfill of {n:,} invoices"
                + (f" (time cap {cap:.0f} s)" if cap else ""),
                started,
            )
            dispatch_runs.append(dispatch_run(n, tmp, seed=seed, time_cap=cap))
            if index == 0 and CPUS != "all":
                _progress(f"in-process backfill of {n:,} invoices, connector on CPUs all", started)
                dispatch_runs.append(dispatch_run(n, tmp, seed=seed, time_cap=None, cpus="all"))
        if "xero" in sections:
            _progress(
                f"backfill of {plan.xero:,} invoices into Xero at {XERO_LIMITS.label()}", started
            )
            xero = xero_run(plan.xero, tmp, seed=seed, spawn=_child)
        profile_path = None
        if args.profile:
            profile_path = str(tmp / "connector.prof")
            _progress("profiled in-process backfill of 2,000 invoices", started)
            dispatch_run(2_000, tmp, seed=seed, time_cap=None, profile=profile_path)
        _progress("done", started)

        runs = [*http_runs, *([wide] if wide else ()), *(side or ()), *dispatch_runs]
        rows = [row for run in runs for row in run.rows]
        if xero is not None:
            rows += _xero_rows(xero)
        print(table(rows))
        print()
        workers = next((run.workers for run in runs if run.workers), None)
        if runs:
            print(
                f"Targets (kantata_sync_workers={workers}, the default; "
                f"connector on CPUs {CPUS}"
                + (", placed as deployed):" if CPUS_REFUSED is None else ", the default):")
            )
            for line in targets(http_runs, real, dispatch_runs, wide):
                print(f"  {line}")
            print()
        if xero is not None:
            print(
                f"Xero ({XERO_LIMITS.label()}; the connector with "
                + ", ".join(f"{k}={v}" for k, v in xero.settings.items())
                + f", {xero.workers} workers):"
            )
            for line in xero_targets(xero):
                print(f"  {line}")
        if side is not None:
            print()
            for line in side_by_side(*side):
                print(line)
        if tap is not None:
            print()
            print(_tap_line(tap))
        print()
        print(_notes([*http_runs, *([wide] if wide else ())], started))
        if xero is not None:
            print(
                "  Xero rows: the Noko/Xero column holds Xero's requests; bound s: the longer of\n"
                "  Kantata's (pages of 200 + one write-back per invoice, at 10/s) and Xero's\n"
                "  (the requests the fake answered, at 60 a minute); the requests by what they\n"
                "  were for are the fake's own counts."
            )
        if profile_path is not None:
            print()
            print_profile(profile_path)
    return 0


def _tap_line(tap: TapCheck) -> str:
    return ("tap-mavenlink: " if not tap.usable else "tap-mavenlink (usable?): ") + tap.reason


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}" + (
        f", commit {commit}" if commit else ""
    )


def _notes(http_runs: list[Run], started: float) -> str:
    lines = [
        f"Machine: {_machine()}.",
        "How to read it:",
        "  N: invoices pushed (quiet rows: invoices in the state). Requests are the connector's",
        "  own counts, retries and 429s included. bound s: (Noko requests truly needed / Noko",
        "  rate) or the same for Kantata, whichever is longer; 'needed' = one per Noko expense",
        "  and invoice that exist afterwards + one lookup per project they use + one create per",
        "  project that did not exist + one listing per 1,000 invoices to match a new state",
        "  file before creating. of bound: bound /",
        "  wall. CPU ms/inv: CPU time (user + system, all threads) of the connector's process",
        "  during the cycle / N; the sandbox runs in another process. In-process rows take off",
        "  the hand-off to the fakes (hand-off ms/inv: the CPU its callers spent in it, by",
        "  their threads' CPU clocks). peak RSS: the connector process's high-water mark",
        "  during the cycle (interpreter and imports included; in parentheses what the cycle",
        "  added to the RSS it started with).",
        f"  Total benchmark time: {time.monotonic() - started:.0f} s.",
    ]
    if CPUS_REFUSED is None:
        lines += [
            f"  CPUs: the benchmark places the connector and the naive baseline on CPUs {CPUS}",
            "  (the highest-numbered CPU, as taskset would), this process with the sandbox and",
            "  the fakes on the others; the row marked `on CPUs all` leaves both where the OS",
            "  puts them.",
        ]
    else:
        lines.append(f"  CPUs: every run with connector on CPUs all, as here {CPUS_REFUSED}.")
    for run in http_runs:
        if run.sandbox_requests is not None:
            counted = sum(c["kantata"]["requests"] + c["noko"]["requests"] for c in run.cycles)
            if counted != run.sandbox_requests:
                lines.append(
                    f"  note: {run.label} N={run.workload.eligible}: the sandbox saw "
                    f"{run.sandbox_requests} requests, the connector counted {counted}"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
