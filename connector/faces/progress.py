"""Backfill progress: the time left from the paced rate, a live bar or plain lines on stderr."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from rich.console import Console

# typer carries its own click; its exceptions are what `standalone_mode=False` lets through.

# What one invoice costs on each side, before a backfill has measured it: about one Noko
# request per line plus one for the invoice (a few lines each), one Kantata write-back.
EXPECTED_NOKO_REQUESTS = 6.0
# Xero takes 50 invoices a request (create, then approve): a few calls per hundred invoices.
EXPECTED_XERO_REQUESTS = 0.05
EXPECTED_KANTATA_REQUESTS = 1.0
# How many invoices the expectation weighs against what the run has measured so far.
PRIOR_WEIGHT = 10.0


class Pace:
    """Time left from the paced rate: the remaining invoices times the requests each costs
    (measured so far, weighed against the expectation while few are done) divided by each
    API's configured requests per second; the slower side sets the pace. Early samples of a
    rate (the first invoices are skipped drafts, or a burst) would say anything."""

    def __init__(
        self,
        noko_rate: float,
        kantata_rate: float,
        requests: Any = None,
        *,
        expected: float = EXPECTED_NOKO_REQUESTS,
    ) -> None:
        """`noko_rate`: the target's requests per second (Noko's or Xero's); `expected`: the
        target requests one invoice is expected to cost before any is measured."""
        self.noko_rate = noko_rate
        self.expected = expected
        self.kantata_rate = kantata_rate
        # () -> (Noko requests, Kantata requests) sent so far in this run.
        self.requests = requests

    def seconds_left(self, done: int, total: int | None) -> float | None:
        if total is None:
            return None
        remaining = max(total - done, 0)
        noko_sent, kantata_sent = self.requests() if self.requests is not None else (0, 0)
        per_noko = (self.expected * PRIOR_WEIGHT + noko_sent) / (PRIOR_WEIGHT + done)
        per_kantata = (EXPECTED_KANTATA_REQUESTS * PRIOR_WEIGHT + kantata_sent) / (
            PRIOR_WEIGHT + done
        )
        return remaining * max(per_noko / self.noko_rate, per_kantata / self.kantata_rate)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "time left unknown"
    whole = round(seconds)
    if whole < 60:
        return f"about {whole} s left"
    hours, rest = divmod(whole, 3600)
    minutes = round(rest / 60) if hours else max(round(rest / 60), 1)
    if hours:
        return f"about {hours} h {minutes} min left"
    return f"about {minutes} min left"


class Progress:
    """Backfill progress on stderr: a live bar on a terminal, a plain line every few seconds
    otherwise (so logs collected by a service manager stay readable).

    The bar draws on the console the log lines print through (`stderr_console`), so a log
    line lands above the bar; the time left comes from `Pace`."""

    def __init__(
        self,
        label: str,
        pace: Pace | None = None,
        console: Console | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        from connector.faces.logs import stderr_console

        self.label = label
        self.pace = pace
        self.clock = clock
        self.total: int | None = None
        self.done = 0
        self.counts: dict[str, int] = {}
        self.started = clock()
        self.last_line = 0.0
        self.lock = threading.Lock()
        self.bar: Any = None
        console = console if console is not None else stderr_console()
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.1f}/s"),
                TextColumn("{task.fields[detail]}"),
                TextColumn("{task.fields[left]}"),
                console=console,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.task = self.bar.add_task(label, total=None, rate=0.0, detail="", left="")
            self.bar.start()

    def left(self) -> str:
        seconds = None if self.pace is None else self.pace.seconds_left(self.done, self.total)
        return _duration(seconds)

    def page(self, _number: int, total: int) -> None:
        with self.lock:
            self.total = max(total, self.total or 0)
            if self.bar is not None:
                self.bar.update(self.task, total=self.total, left=self.left())

    def advance(self, counts: Any) -> None:
        with self.lock:
            self.counts = dict(counts)
            self.done = sum(self.counts.values())
            now = self.clock()
            rate = self.done / max(now - self.started, 1e-6)
            detail = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()) if v)
            if self.bar is not None:
                self.bar.update(
                    self.task, completed=self.done, rate=rate, detail=detail, left=self.left()
                )
            elif now - self.last_line >= 5.0:
                self.last_line = now
                of = f"/{self.total}" if self.total else ""
                sys.stderr.write(
                    f"{self.label}: {self.done}{of} invoices ({detail}), {rate:.1f}/s, "
                    f"{self.left()}\n"
                )
                sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
