"""The benchmark's scenarios: a backfill over HTTP on loopback against the sandbox at given
limits (`http_run`), and one without HTTP, the requests handed to the fakes in this process
(`dispatch_run`). Each gives a `Run`: what the child measured and a `Row` per cycle."""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.dispatch import DispatchServer
from bench.launch import CPUS, launch
from bench.workload import Workload, populate
from connector.kantata.client import REFERENCE_UPSERT
from sandbox import FakeKantata, FakeNoko, FaultConfig, Sandbox
from tests.e2e import KANTATA_TOKEN, NOKO_TOKEN, check_books

PER_PAGE = 200
UNLIMITED = 1e9  # Settings wants a positive rate; this one never makes a request wait
DISPATCH_KANTATA = "http://127.0.0.1:9/api/v1"  # never connected to: the dispatch transport
DISPATCH_NOKO = "http://127.0.0.1:9/v2"  # answers instead (a failed hook fails loudly)

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
        out = launch(job, tmp / f"{name}.log", timeout)
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
        out = launch(job, tmp / f"dispatch-{n}-{cpus}.log", timeout=7200)
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
