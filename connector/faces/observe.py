"""The daemon's small HTTP endpoint: `/healthz`, `/readyz`, `/metrics` (Prometheus) and
`/status` (HTML).

Liveness (`/healthz`) and readiness (`/readyz`) answer different questions:

- alive: the process is making progress. A cycle that is running is alive while requests keep
  completing and invoices keep being handled (a first full sync of hours is alive all along);
  between cycles, the next one must start on time. Only a stuck process fails it, so an
  orchestrator that restarts on it never restarts a slow but working sync.
- ready: a cycle has finished recently and read both APIs (its outcome `ok` or `failed`; the
  invoices that failed are in the metrics and the report). The first cycle is not ready until it
  finishes; `aborted` and `degraded` are not ready.

Outcomes are the words of `connector.sync.engine.CYCLE_OUTCOMES`. Metrics are read at scrape time
from the state store and the clients' counters, plus a request-duration histogram fed by the
transports' observer and the standard process metrics.
"""

from __future__ import annotations

import hmac
import json
import platform
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from connector import __version__
from connector.faces.report import build_report
from connector.http import ApiStats
from connector.state.store import Store
from connector.sync.engine import CYCLE_OUTCOMES

READY_OUTCOMES = ("ok", "failed")
"""Outcomes of a cycle that read both APIs through."""
MIN_STALL_SECONDS = 600.0


def stall_limit(interval: float) -> float:
    """Seconds without any progress after which a running cycle counts as stuck."""
    return max(MIN_STALL_SECONDS, 3 * interval)


@dataclass
class DaemonHealth:
    """What the daemon knows about its own cycles, shared with the HTTP endpoint."""

    interval: float
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    cycle_started_at: datetime | None = None
    last_progress_at: datetime | None = None
    last_finished_at: datetime | None = None
    last_outcome: str | None = None
    last_duration: float | None = None
    last_error: str | None = None
    cycles: int = 0
    by_outcome: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.started_at is None:
            self.started_at = self.clock()
        self.last_progress_at = self.started_at

    def cycle_started(self) -> None:
        with self.lock:
            self.cycle_started_at = self.last_progress_at = self.clock()

    def progress(self, *_args: Any) -> None:
        """A request completed or an invoice was handled: the process is moving."""
        now = self.clock()
        with self.lock:
            self.last_progress_at = now

    def cycle_ended(self) -> None:
        """A cycle ended without a result (skipped for the lock, or crashed)."""
        with self.lock:
            self.cycle_started_at = None
            self.last_progress_at = self.clock()

    def record(self, outcome: str, duration: float, error: str | None) -> None:
        with self.lock:
            self.last_finished_at = self.last_progress_at = self.clock()
            self.cycle_started_at = None
            self.last_outcome = outcome
            self.last_duration = duration
            self.last_error = error
            self.cycles += 1
            self.by_outcome[outcome] += 1

    def liveness(self, now: datetime | None = None) -> tuple[bool, str]:
        """Alive: progress within `stall_limit`, or idle and the next cycle not overdue."""
        now = now or self.clock()
        stall = stall_limit(self.interval)
        with self.lock:
            assert self.last_progress_at is not None
            quiet = (now - self.last_progress_at).total_seconds()
            last = self._last_words(now)
            if self.cycle_started_at is not None:
                running = (now - self.cycle_started_at).total_seconds()
                if quiet > stall:
                    return False, (
                        f"cycle running for {running:.0f} s without progress for {quiet:.0f} s "
                        f"(limit {stall:.0f} s)"
                    )
                return True, f"cycle running for {running:.0f} s, last progress {quiet:.0f} s ago"
            if quiet > self.interval + stall:
                return False, f"no cycle started for {quiet:.0f} s (interval {self.interval:g} s)"
            return True, f"idle; {last}"

    def readiness(self, now: datetime | None = None) -> tuple[bool, str]:
        """Ready: the last cycle read both APIs (`ok` or `failed`) and finished recently."""
        now = now or self.clock()
        limit = max(self.interval * 3, 60.0)
        with self.lock:
            if self.last_finished_at is None:
                return False, "first cycle still running"
            age = (now - self.last_finished_at).total_seconds()
            if self.last_outcome not in READY_OUTCOMES:
                return False, self._last_words(now) + (
                    f": {self.last_error}" if self.last_error else ""
                )
            if age > limit:
                return False, f"last cycle finished {age:.0f} s ago (limit {limit:.0f} s)"
            return True, self._last_words(now)

    def _last_words(self, now: datetime) -> str:
        if self.last_finished_at is None:
            return "no cycle finished yet"
        age = (now - self.last_finished_at).total_seconds()
        return f"last cycle {self.last_outcome} {age:.0f} s ago"


def status_class(status: int | None) -> str:
    """`2xx` ... `5xx`, or `error` when no answer came (timeout, connection refused)."""
    return f"{status // 100}xx" if status is not None and 100 <= status < 600 else "error"


class Metrics:
    """The daemon's Prometheus registry: process and platform metrics, `build_info`, the
    request-duration histogram, and (once `serve` adds it) the scrape-time collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.request_seconds = Histogram(
            "kantata_sync_api_request_duration_seconds",
            "Duration of HTTP exchanges, per API and status class (error: no answer)",
            labelnames=["api", "status_class"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=self.registry,
        )

    def observer(
        self, api: str, health: DaemonHealth | None = None
    ) -> Callable[[float, int | None], None]:
        """The callback for `ApiStats.observer`: one histogram sample, and progress."""

        def observe(seconds: float, status: int | None) -> None:
            self.request_seconds.labels(api, status_class(status)).observe(seconds)
            if health is not None:
                health.progress()

        return observe


class StatsBook:
    """The clients' counters over the process's life: a client replaced (a rotated token)
    leaves its totals here, so counters never go back."""

    FIELDS = ("requests", "errors", "status_429", "wait_seconds")

    def __init__(self, current: dict[str, ApiStats]) -> None:
        self.current = current
        self.retired: dict[str, dict[str, float]] = {}
        self.lock = threading.Lock()

    def replace(self, current: dict[str, ApiStats]) -> None:
        with self.lock:
            for api, stats in self.current.items():
                snap = stats.snapshot()
                kept = self.retired.setdefault(api, dict.fromkeys(self.FIELDS, 0.0))
                for name in self.FIELDS:
                    kept[name] += snap[name]
            self.current = current

    def totals(self) -> dict[str, dict[str, float]]:
        with self.lock:
            out = {api: dict(values) for api, values in self.retired.items()}
            for api, stats in self.current.items():
                snap = stats.snapshot()
                kept = out.setdefault(api, dict.fromkeys(self.FIELDS, 0.0))
                for name in self.FIELDS:
                    kept[name] += snap[name]
            return out


def _timestamp(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else 0.0


class SyncCollector(Collector):
    """Prometheus metrics read at scrape time."""

    def __init__(
        self, store: Store, stats: StatsBook | dict[str, ApiStats], health: DaemonHealth
    ) -> None:
        self.store = store
        self.stats = stats if isinstance(stats, StatsBook) else StatsBook(stats)
        self.health = health

    def collect(self) -> Iterator[Any]:
        build = GaugeMetricFamily(
            "kantata_sync_build_info",
            "Always 1: the version of kantata-sync and of Python running it",
            labels=["version", "python"],
        )
        build.add_metric([__version__, platform.python_version()], 1)
        yield build

        invoices = GaugeMetricFamily(
            "kantata_sync_invoices",
            "Kantata invoices known to the connector, by state",
            labels=["state"],
        )
        counts = {"synced": 0, "failed": 0, "conflict": 0, "pending": 0, "skipped": 0}
        counts.update(self.store.counts())
        for state, count in sorted(counts.items()):
            invoices.add_metric([state], count)
        yield invoices

        cursor = self.store.get_cursor()
        lag = GaugeMetricFamily(
            "kantata_sync_cursor_lag_seconds", "Seconds between now and the incremental cursor"
        )
        lag.add_metric([], (datetime.now(UTC) - cursor).total_seconds() if cursor else 0.0)
        yield lag

        success = GaugeMetricFamily(
            "kantata_sync_last_success_timestamp_seconds",
            "Unix time the last cycle with outcome ok finished (0: none in the state file)",
        )
        last_ok = self.store.last_run_with_outcome("ok")
        success.add_metric([], _timestamp(last_ok.finished_at if last_ok else None))
        yield success
        through = GaugeMetricFamily(
            "kantata_sync_last_complete_cycle_timestamp_seconds",
            "Unix time the last cycle that read both APIs through (outcome ok or failed) "
            "finished (0: none in the state file)",
        )
        last_through = self.store.last_run_with_outcome(*READY_OUTCOMES)
        through.add_metric([], _timestamp(last_through.finished_at if last_through else None))
        yield through

        with self.health.lock:
            last_duration = self.health.last_duration or 0.0
            last_outcome = self.health.last_outcome
            by_outcome = dict(self.health.by_outcome)
            running = self.health.cycle_started_at is not None
        duration = GaugeMetricFamily(
            "kantata_sync_last_cycle_duration_seconds", "Duration of the last finished cycle"
        )
        duration.add_metric([], last_duration)
        yield duration
        last = GaugeMetricFamily(
            "kantata_sync_last_cycle_outcome",
            "1 for the outcome of the last cycle this process finished, 0 for the others",
            labels=["outcome"],
        )
        cycles = CounterMetricFamily(
            "kantata_sync_cycles", "Cycles finished by this process, by outcome", labels=["outcome"]
        )
        for outcome in CYCLE_OUTCOMES:
            last.add_metric([outcome], 1 if outcome == last_outcome else 0)
            cycles.add_metric([outcome], by_outcome.get(outcome, 0))
        yield last
        yield cycles
        in_progress = GaugeMetricFamily(
            "kantata_sync_cycle_running", "1 while a cycle is running, else 0"
        )
        in_progress.add_metric([], 1 if running else 0)
        yield in_progress

        requests = CounterMetricFamily(
            "kantata_sync_api_requests", "HTTP requests sent, per API", labels=["api"]
        )
        errors = CounterMetricFamily(
            "kantata_sync_api_errors", "HTTP requests that failed, per API", labels=["api"]
        )
        limited = CounterMetricFamily(
            "kantata_sync_api_rate_limited", "HTTP 429 answers received, per API", labels=["api"]
        )
        waits = CounterMetricFamily(
            "kantata_sync_rate_limit_wait_seconds",
            "Seconds spent waiting for the request pacer, per API",
            labels=["api"],
        )
        for api, snap in sorted(self.stats.totals().items()):
            requests.add_metric([api], snap["requests"])
            errors.add_metric([api], snap["errors"])
            limited.add_metric([api], snap["status_429"])
            waits.add_metric([api], snap["wait_seconds"])
        yield from (requests, errors, limited, waits)


def read_status_token(path: Path) -> str | None:
    """The bearer token `/status` requires, read now (so that a rotated file counts at once);
    None when it cannot be read or is empty."""
    try:
        token = path.read_text("utf-8").strip()
    except OSError:
        return None
    return token or None


STATUS_PATHS = ("/", "/status", "/status.json")


def serve(
    host: str,
    port: int,
    *,
    store: Store,
    stats: StatsBook | dict[str, ApiStats],
    health: DaemonHealth,
    render_html: Callable[[dict[str, Any]], str] | None = None,
    metrics: Metrics | None = None,
    status_token_file: Path | None = None,
    exposed: bool = False,
    target: str = "Noko",
) -> ThreadingHTTPServer:
    """Start the endpoint on a background thread; the caller shuts it down.

    `/status` shows customers and amounts. With `status_token_file` it requires
    `Authorization: Bearer <the file's token>`; without it, it is served only when the endpoint
    is not `exposed` (it listens on loopback)."""
    metrics = metrics or Metrics()
    registry = metrics.registry
    registry.register(SyncCollector(store, stats, health))
    log = structlog.get_logger("kantata_sync.observe")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(
            self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _refuse_status(self) -> bool:
            """Answer and return True when this request may not see the report."""
            if status_token_file is None:
                if not exposed:
                    return False
                self._error(
                    403,
                    "the status report shows customers and amounts: it is served beyond "
                    "loopback only with KANTATA_SYNC_STATUS_TOKEN_FILE set",
                )
                return True
            expected = read_status_token(status_token_file)
            if expected is None:
                log.warning("status token file unreadable or empty", path=str(status_token_file))
                self._error(503, "the status token file cannot be read")
                return True
            given = self.headers.get("Authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), expected.encode()
            ):
                self._error(
                    401, "a bearer token is required", {"WWW-Authenticate": 'Bearer realm="status"'}
                )
                return True
            return False

        def _error(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps({"error": message}).encode(), "application/json", extra)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/healthz", "/livez"):
                ok, reason = health.liveness()
                body = json.dumps({"healthy": ok, "reason": reason}).encode()
                self._send(200 if ok else 503, body, "application/json")
            elif path == "/readyz":
                ok, reason = health.readiness()
                body = json.dumps({"ready": ok, "reason": reason}).encode()
                self._send(200 if ok else 503, body, "application/json")
            elif path == "/metrics":
                self._send(200, generate_latest(registry), "text/plain; version=0.0.4")
            elif path in STATUS_PATHS and (path == "/status.json" or render_html is not None):
                if self._refuse_status():
                    return
                report = build_report(store, target=target)
                if path == "/status.json":
                    self._send(200, json.dumps(report).encode(), "application/json")
                else:
                    assert render_html is not None
                    self._send(200, render_html(report).encode(), "text/html")
            else:
                self._error(404, "not found")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="observe", daemon=True).start()
    return server
