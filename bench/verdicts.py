"""The benchmark's verdicts: each target of the performance issue with the figure that shows it
met or missed, and the naive baseline beside the connector."""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench.launch import CPUS
from bench.scenarios import PER_PAGE, SCALED, Run
from connector.kantata.client import REFERENCE_UPSERT


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
            # A request answered 429 was refused, not applied, and is sent again: it is counted
            # apart (the 429s column), not as a request the connector chose to make.
            refused = backfill["noko"]["status_429"]
            extra = sent - refused - run.noko_needed
            lookups = _endpoint(backfill, "noko", "GET /projects")
            lines.append(
                f"{verdict(extra <= math.ceil(pushed / 1000) + 1 and lookups == run.projects)} "
                f"Noko requests, N={pushed:,}: {sent:,} sent ({refused} of them answered 429), "
                f"{run.noko_needed:,} needed "
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
