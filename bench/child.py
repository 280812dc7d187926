"""The connector side of one benchmark run, in a process of its own.

`python -m bench.child` reads a job (JSON) on stdin, runs the cycles it names and writes one
JSON line of measurements on stdout. Running here, apart from the sandbox, makes the process
CPU time and the RSS high-water mark the connector's alone. Per cycle it reports wall time,
process CPU time (all threads, user + system), the RSS at the start and its peak during the
cycle (`VmHWM`, reset through `/proc/self/clear_refs` at the start), and the connector's own
request counters of each API.
"""

from __future__ import annotations

import cProfile
import functools
import json
import os
import re
import resource
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

__all__ = ["main"]


def _status_kb(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class _Meter:
    """Wall, CPU and memory of one measured stretch of this process."""

    def __init__(self) -> None:
        self.peak_reset = _reset_peak()
        self.rss_start_kb = _status_kb("VmRSS")
        self.usage = resource.getrusage(resource.RUSAGE_SELF)
        self.wall = time.perf_counter()

    def done(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.wall
        usage = resource.getrusage(resource.RUSAGE_SELF)
        user = usage.ru_utime - self.usage.ru_utime
        system = usage.ru_stime - self.usage.ru_stime
        peak = _status_kb("VmHWM") if self.peak_reset else None
        return {
            "wall": wall,
            "cpu": user + system,
            "cpu_user": user,
            "cpu_sys": system,
            "rss_start_kb": self.rss_start_kb,
            # Without a resettable VmHWM, the process's lifetime peak.
            "rss_peak_kb": peak if peak is not None else usage.ru_maxrss,
        }


class _RssSampler:
    """Samples (invoices done, RSS) twice a second during a cycle, to see whether memory
    grows with the number of invoices handled."""

    def __init__(self, engine: Any) -> None:
        self.done = 0
        self.series: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._engine = engine
        engine.on_progress = self._progress
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()

    def _progress(self, counts: Any) -> None:
        self.done = sum(counts.values())

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            rss = _status_kb("VmRSS")
            if rss is not None:
                self.series.append((self.done, rss))

    def close(self) -> list[tuple[int, int]]:
        self._stop.set()
        self._thread.join()
        self._engine.on_progress = None
        return self.series


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    endpoints = {
        key: count - before["by_endpoint"].get(key, 0)
        for key, count in after["by_endpoint"].items()
        if count - before["by_endpoint"].get(key, 0)
    }
    return {
        "requests": after["requests"] - before["requests"],
        "errors": after["errors"] - before["errors"],
        "status_429": after["status_429"] - before["status_429"],
        "retries": after["retries"] - before["retries"],
        "wait_seconds": after["wait_seconds"] - before["wait_seconds"],
        "by_endpoint": endpoints,
    }


class _ThreadProfiles:
    """cProfile in every thread started while active (the engine's workers run in a pool),
    timed by each thread's CPU clock, so waiting (locks, sockets, fsync) costs nothing."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start(self, *_: Any) -> None:
        sys.setprofile(None)
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append(profile)
        profile.enable()

    def __enter__(self) -> _ThreadProfiles:
        threading.setprofile(self._start)
        self._start()
        return self

    def __exit__(self, *_: Any) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]
        for profile in self.profiles:
            profile.disable()

    def dump(self, path: str) -> None:
        import pstats

        stats = pstats.Stats(self.profiles[0])
        for profile in self.profiles[1:]:
            stats.add(profile)
        stats.dump_stats(path)


def _use_transports(dispatch: str) -> None:
    """Make `open_connector` build its clients on the dispatch transport (their own
    `transport=` parameter), so the wiring under test stays the application's."""
    import connector.faces.app as app
    from bench.dispatch import DispatchTransport
    from connector.kantata.client import KantataClient
    from connector.targets.noko.client import NokoClient

    kantata = DispatchTransport(dispatch, "kantata")
    noko = DispatchTransport(dispatch, "noko")
    _HANDOFFS.extend((kantata, noko))
    app.KantataClient = functools.partial(  # type: ignore[misc]
        KantataClient, transport=kantata
    )
    app.NokoClient = functools.partial(NokoClient, transport=noko)  # type: ignore[misc]


_HANDOFFS: list[Any] = []
"""The dispatch transports of this process, whose hand-off CPU is reported apart."""


def _handoff_cpu() -> float:
    return sum(transport.cpu for transport in _HANDOFFS)


def _advance_clocks(job: dict[str, Any], conn: Any, seconds: float) -> None:
    """Time passes on both sides, without waiting: the fakes' clocks (their admin endpoint, over
    the same transport as the connector's requests) and the engine's clock move on together."""
    import httpx

    from sandbox._core import ADMIN_PREFIX

    services = [("kantata", job["kantata_url"]), ("noko", job["noko_url"])]
    if job.get("xero"):
        services.append(("xero", job["xero"]["api_url"]))
    for name, url in services:
        root = httpx.URL(url).copy_with(path=f"{ADMIN_PREFIX}/clock", query=None)
        transport: httpx.BaseTransport | None = None
        if job.get("dispatch"):
            from bench.dispatch import DispatchTransport

            transport = DispatchTransport(job["dispatch"], name)
        with httpx.Client(transport=transport) as client:
            client.post(root, json={"advance": seconds}).raise_for_status()
    before = conn.engine.clock
    conn.engine.clock = lambda: before() + timedelta(seconds=seconds)


def _run_connector(job: dict[str, Any]) -> dict[str, Any]:
    from connector.faces.app import open_connector
    from connector.faces.config import Settings
    from connector.faces.logs import configure_logging

    if job.get("dispatch"):
        _use_transports(job["dispatch"])
    xero: dict[str, Any] = {}
    if job.get("xero"):
        # KANTATA_SYNC_TARGET=xero, as the demo configures it against the fake Xero.
        given = job["xero"]
        xero = {
            "kantata_sync_target": "xero",
            "xero_client_id": given["client_id"],
            "xero_client_secret": SecretStr(given["client_secret"]),
            "xero_base_url": given["api_url"],
            "xero_token_url": given["token_url"],
            "xero_connections_url": given["connections_url"],
            "kantata_sync_mapping_profile": Path(given["profile"]),
        }
    settings = Settings(
        kantata_base_url=job["kantata_url"],
        noko_base_url=job["noko_url"],
        kantata_token=SecretStr(job["kantata_token"]),
        noko_token=SecretStr(job["noko_token"]),
        kantata_sync_database_url=f"sqlite:///{job['database']}",
        kantata_sync_log_format="json",
        **xero,
        **job.get("settings", {}),
    )
    # The target's counters (Noko's or Xero's), reported under its name.
    side = "xero" if xero else "noko"
    configure_logging(settings.kantata_sync_log_format, settings.kantata_sync_log_level)
    stop = threading.Event()
    cycles: list[dict[str, Any]] = []
    opened = _Meter()
    with open_connector(settings, stop=stop) as conn, conn.store.writer():
        startup = opened.done()
        later = 0.0
        for kind in job["cycles"]:
            if kind.startswith("later:"):
                # Not a cycle: the next one runs this many seconds later, nothing changed.
                later = float(kind.split(":", 1)[1])
                _advance_clocks(job, conn, later)
                continue
            timer = None
            if job.get("time_cap") and kind == "backfill":
                timer = threading.Timer(job["time_cap"], stop.set)
                timer.daemon = True
                timer.start()
            k_before = conn.kantata.stats.snapshot()
            n_before = conn.target_stats.snapshot()
            profiles = _ThreadProfiles() if job.get("profile") and kind == "backfill" else None
            sampler = _RssSampler(conn.engine) if kind == "backfill" else None
            handoff = _handoff_cpu()
            started_at = time.time()
            meter = _Meter()
            if profiles is not None:
                with profiles:
                    result = conn.engine.run_cycle(kind)
            else:
                result = conn.engine.run_cycle(kind)
            measured = meter.done()
            measured["started_at"], measured["ended_at"] = started_at, time.time()
            measured["handoff_cpu"] = _handoff_cpu() - handoff
            if sampler is not None:
                measured["rss_series"] = sampler.close()
            if timer is not None:
                timer.cancel()
            if profiles is not None:
                profiles.dump(job["profile"])
            cycles.append(
                {
                    "kind": kind,
                    "later": later,
                    **measured,
                    "outcome": result.outcome,
                    "counts": dict(result.counts),
                    "failed": len(result.failed),
                    "pages": result.pages,
                    "kantata": _delta(conn.kantata.stats.snapshot(), k_before),
                    side: _delta(conn.target_stats.snapshot(), n_before),
                }
            )
            stop.clear()
            later = 0.0
    return {
        "startup": startup,
        "cycles": cycles,
        "workers": settings.kantata_sync_workers,
        "settings": {
            key: getattr(settings, key)
            for key in (
                "kantata_max_requests_per_second",
                "xero_max_requests_per_minute",
                "xero_max_concurrent",
            )
        }
        if xero
        else {},
    }


def _run_naive(job: dict[str, Any]) -> dict[str, Any]:
    from bench.naive import naive_backfill

    meter = _Meter()
    result = naive_backfill(
        job["kantata_url"], job["kantata_token"], job["noko_url"], job["noko_token"]
    )
    measured = meter.done()
    return {
        "cycles": [
            {
                "kind": "backfill",
                **measured,
                "outcome": "ok" if not result.failed else "failed",
                "counts": {"pushed": result.pushed, "skipped": result.skipped},
                "failed": result.failed,
                "kantata": {
                    "requests": result.requests["kantata"],
                    "status_429": result.status_429["kantata"],
                },
                "noko": {
                    "requests": result.requests["noko"],
                    "status_429": result.status_429["noko"],
                },
            }
        ]
    }


def _place(job: dict[str, Any]) -> None:
    """On the CPUs the benchmark chose for the connector (and the naive baseline alike), as
    an operator places it (taskset, systemd's CPUAffinity=); elsewhere where it inherited."""
    placed = job.get("cpus_placed")
    if placed:
        os.sched_setaffinity(0, placed)


def main() -> None:
    job = json.loads(sys.stdin.read())
    _place(job)
    output = _run_naive(job) if job["mode"] == "naive" else _run_connector(job)
    output["ru_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stdout.write(json.dumps(output) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
