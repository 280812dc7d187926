"""The daemon's clock: an APScheduler interval job running one cycle at a time.

This is the only module that knows APScheduler. Overlapping cycles are impossible
(`max_instances=1`), missed runs collapse into one (`coalesce=True`), and a stop request ends
the sleep between cycles at once and the cycle in flight as soon as its requests give way.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler


def run_forever(
    cycle: Callable[[], object],
    *,
    interval: float,
    stop: threading.Event,
) -> None:
    """Run `cycle` now and then every `interval` seconds until `stop` is set."""
    log = structlog.get_logger("kantata_sync.scheduler")
    scheduler = BlockingScheduler(timezone=UTC)

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

    def watch() -> None:
        stop.wait()
        log.info("stop requested; ending the cycle in flight")
        with contextlib.suppress(SchedulerNotRunningError):
            scheduler.shutdown(wait=True)

    threading.Thread(target=watch, name="stop-watch", daemon=True).start()
    log.info("daemon started", interval_seconds=interval)
    scheduler.start()
    log.info("daemon stopped")
