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
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.launch import CPUS, CPUS_REFUSED, ROOT, launch
from bench.scenarios import (
    QUIET_AFTER,
    REAL,
    SCALED,
    WIDE_WORKERS,
    Run,
    dispatch_run,
    http_run,
)
from bench.table import table, xero_rows
from bench.tap import TapCheck, check_tap
from bench.verdicts import side_by_side, targets
from bench.xero import XERO_LIMITS, XeroRun, xero_run, xero_targets


def _progress(message: str, started: float) -> None:
    print(f"[{time.monotonic() - started:7.1f} s] {message}", file=sys.stderr, flush=True)


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
            xero = xero_run(plan.xero, tmp, seed=seed, spawn=launch)
        profile_path = None
        if args.profile:
            profile_path = str(tmp / "connector.prof")
            _progress("profiled in-process backfill of 2,000 invoices", started)
            dispatch_run(2_000, tmp, seed=seed, time_cap=None, profile=profile_path)
        _progress("done", started)

        runs = [*http_runs, *([wide] if wide else ()), *(side or ()), *dispatch_runs]
        rows = [row for run in runs for row in run.rows]
        if xero is not None:
            rows += xero_rows(xero)
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
