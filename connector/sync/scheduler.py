"""The daemon's clock: an APScheduler interval job running one cycle at a time.

This is the only module that knows APScheduler. Overlapping cycles are impossible
(`max_instances=1`), missed runs collapse into one (`coalesce=True`), and a stop request ends
the sleep between cycles at once and the cycle in flight as soon as its requests give way.

The scheduler runs in a thread of its own; the main thread waits for the stop in steps of at
most `SIGNAL_STEP` seconds. Python runs signal handlers in the main thread only, and only
when it runs Python code: a signal the kernel hands to another thread (it does when the main
thread has a signal pending already, say a SIGTERM right after a SIGHUP, or is being traced)
would otherwise wait until the main thread woke up by itself, for a blocking scheduler at the
next cycle, minutes away.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler

SIGNAL_STEP = 0.5
"""Longest the main thread waits without running Python code (and so signal handlers)."""


def run_forever(
    cycle: Callable[[], object],
    *,
    interval: float,
    stop: threading.Event,
) -> None:
    """Run `cycle` now and then every `interval` seconds until `stop` is set; returns once
    the cycle in flight, if any, has ended."""
    log = structlog.get_logger("kantata_sync.scheduler")
    scheduler = BackgroundScheduler(timezone=UTC)

    def job() -> None:
        if stop.is_set():
            return
        try:
            cycle()
        except Exception:  # the daemon outlives one bad cycle
            log.exception("cycle crashed; the next one runs on schedule")

    scheduler.add_job(
        job,
        "interval",
        seconds=interval,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
        id="sync-cycle",
    )
    log.info("daemon started", interval_seconds=interval)
    scheduler.start()
    try:
        while not stop.wait(SIGNAL_STEP):
            pass
        log.info("stop requested; ending the cycle in flight")
    finally:
        with contextlib.suppress(SchedulerNotRunningError):
            scheduler.shutdown(wait=True)
    log.info("daemon stopped")
