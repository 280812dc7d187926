"""The daemon's small HTTP endpoint: `/healthz`, `/metrics` (Prometheus) and `/status` (HTML).

Healthy means: the last cycle finished within three intervals (or the first is still running
within its grace time) and both APIs answered it. Metrics are collected at scrape time from the
state store and the clients' counters, so nothing here keeps state of its own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from connector.http import ApiStats
from connector.report import build_report
from connector.store import Store


@dataclass
class DaemonHealth:
    """What the daemon knows about its own cycles, shared with the HTTP endpoint."""

    interval: float
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_finished_at: datetime | None = None
    last_outcome: str | None = None
    last_duration: float | None = None
    last_error: str | None = None
    cycles: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, outcome: str, duration: float, error: str | None) -> None:
        with self.lock:
            self.last_finished_at = datetime.now(UTC)
            self.last_outcome = outcome
            self.last_duration = duration
            self.last_error = error
            self.cycles += 1

    def verdict(self, now: datetime | None = None) -> tuple[bool, str]:
        now = now or datetime.now(UTC)
        limit = max(self.interval * 3, 60.0)
        with self.lock:
            if self.last_finished_at is None:
                waited = (now - self.started_at).total_seconds()
                if waited <= limit + 600:
                    return True, "first cycle running"
                return False, f"no cycle finished in {waited:.0f} s"
            age = (now - self.last_finished_at).total_seconds()
            if age > limit:
                return False, f"last cycle finished {age:.0f} s ago (limit {limit:.0f} s)"
            if self.last_outcome in ("aborted", "degraded"):
                return False, f"last cycle {self.last_outcome}: {self.last_error}"
            return True, f"last cycle {self.last_outcome} {age:.0f} s ago"


class SyncCollector(Collector):
    """Prometheus metrics read at scrape time."""

    def __init__(self, store: Store, stats: dict[str, ApiStats], health: DaemonHealth) -> None:
        self.store = store
        self.stats = stats
        self.health = health

    def collect(self) -> Iterator[Any]:
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

        duration = GaugeMetricFamily(
            "kantata_sync_last_cycle_duration_seconds", "Duration of the last finished cycle"
        )
        duration.add_metric([], self.health.last_duration or 0.0)
        yield duration
        cycles = CounterMetricFamily("kantata_sync_cycles", "Cycles finished by this process")
        cycles.add_metric([], self.health.cycles)
        yield cycles

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
        for api, stats in sorted(self.stats.items()):
            snap = stats.snapshot()
            requests.add_metric([api], snap["requests"])
            errors.add_metric([api], snap["errors"])
            limited.add_metric([api], snap["status_429"])
            waits.add_metric([api], snap["wait_seconds"])
        yield from (requests, errors, limited, waits)


def serve(
    host: str,
    port: int,
    *,
    store: Store,
    stats: dict[str, ApiStats],
    health: DaemonHealth,
    render_html: Callable[[dict[str, Any]], str] | None = None,
) -> ThreadingHTTPServer:
    """Start the endpoint on a background thread; the caller shuts it down."""
    registry = CollectorRegistry()
    registry.register(SyncCollector(store, stats, health))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok, reason = health.verdict()
                body = json.dumps({"healthy": ok, "reason": reason}).encode()
                self._send(200 if ok else 503, body, "application/json")
            elif path == "/metrics":
                self._send(200, generate_latest(registry), "text/plain; version=0.0.4")
            elif path in ("/", "/status") and render_html is not None:
                self._send(200, render_html(build_report(store)).encode(), "text/html")
            elif path == "/status.json":
                self._send(200, json.dumps(build_report(store)).encode(), "application/json")
            else:
                self._send(404, b'{"error": "not found"}', "application/json")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="observe", daemon=True).start()
    return server
