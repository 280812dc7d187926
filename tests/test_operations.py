"""What operators of a pipeline expect: one word for a cycle's outcome everywhere, JSON logs
that stay JSON, liveness apart from readiness, metrics, token files that rotate, a webhook
told once, and a status report that is not served to strangers."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from rich.console import Console

from connector.errors import ApiError
from connector.faces.app import open_connector
from connector.faces.daemon import Daemon
from connector.faces.logs import configure_logging, register_secret
from connector.faces.notify import notify
from connector.faces.observe import DaemonHealth, Metrics, serve, stall_limit
from connector.faces.report import build_report, render_table
from connector.http import ApiTransport, RetryPolicy
from connector.state.store import Store
from connector.sync.engine import CYCLE_OUTCOMES, CycleResult
from sandbox import Sandbox, generate
from tests.e2e import cli_env, run_cli, settings_for, status_json

SECRET = "ops-SECRET-token-4242"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def _eligible(box: Sandbox) -> list[int]:
    return [
        int(inv["id"])
        for inv in box.kantata.state()["invoices"]
        if not inv["draft"] and inv["status"] != "cancelled"
    ]


def _noko_invoice(box: Sandbox, kantata_id: int) -> dict[str, Any]:
    for invoice in box.noko.invoices():
        if invoice.get("reference") == f"KS-{kantata_id}":
            return invoice
    raise AssertionError(f"no Noko invoice for {kantata_id}")


# --------------------------------------------------------------------------- item 2: outcome


def test_cycle_result_has_one_outcome_word() -> None:
    """`failed` when invoices failed, whatever else; the cycle's own outcome otherwise."""
    result = CycleResult("r", "sync")
    assert (result.final_outcome, result.exit_code) == ("ok", 0)
    result.failed["1"] = "boom"
    assert (result.final_outcome, result.exit_code) == ("failed", 1)
    result.outcome = "degraded"
    assert result.final_outcome == "degraded"
    assert set(CYCLE_OUTCOMES) == {"ok", "failed", "aborted", "degraded", "interrupted"}


def test_summary_log_and_status_say_the_same_word(box: Sandbox, tmp_path: Path) -> None:
    """A cycle with a failed invoice is `failed` in the summary line, the log line, and the
    cycles table (before, the log and the summary said `ok`)."""
    generate(box.kantata, seed=61, invoices=5, draft_rate=0, cancelled_rate=0)
    box.kantata.corrupt_invoice(_eligible(box)[0], "currency", "XXX")
    env = cli_env(box, tmp_path)
    done = run_cli(["sync"], env, tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("sync failed: "), done.stdout
    finished = [json.loads(line) for line in done.stderr.splitlines() if '"cycle finished"' in line]
    assert [line["outcome"] for line in finished] == ["failed"]
    assert finished[0]["failed_invoices"] == 1
    run = status_json(env, tmp_path)["runs"][0]
    assert (run["outcome"], run["failed"], run["conflicts"]) == ("failed", 1, 0)


def test_cycles_table_counts_updates_and_conflicts_apart(box: Sandbox, tmp_path: Path) -> None:
    """An invoice changed in Kantata is an update, one changed by hand in Noko a conflict:
    neither is counted as a push or a failure."""
    generate(box.kantata, seed=62, invoices=4, draft_rate=0, cancelled_rate=0)
    changed, edited = _eligible(box)[:2]
    settings = settings_for(box, tmp_path)
    with open_connector(settings) as c:
        assert c.engine.run_cycle().final_outcome == "ok"
        box.kantata.update_invoice(changed, message="a new message")
        noko = _noko_invoice(box, edited)
        box.noko.edit_invoice(
            int(noko["id"]),
            add_expenses=[
                {
                    "price": "12.00",
                    "description": "Added by hand",
                    "taxable": False,
                    "project_id": int(noko["projects"][0]["id"]),
                }
            ],
        )
        second = c.engine.run_cycle()
        assert second.final_outcome == "failed"
        report = build_report(c.store)
    run = report["runs"][0]
    assert run["outcome"] == "failed"
    assert (run["pushed"], run["updated"], run["conflicts"], run["failed"]) == (0, 1, 1, 0)
    console = Console(width=200, record=True)
    render_table(report, console)
    text = console.export_text()
    assert "updated" in text
    assert "conflicts" in text


# --------------------------------------------------------------------------- item 3: logs


def test_standard_logging_lines_are_json_and_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    """APScheduler's warning (standard logging) comes out as a JSON line like every other,
    with registered secrets scrubbed; before, it was plain text in the JSON stream."""
    register_secret(SECRET)
    configure_logging("json", "info")
    logging.getLogger("apscheduler.executors.default").warning(
        'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
        f"job {SECRET}",
        1,
    )
    structlog.get_logger("kantata_sync").info("cycle finished", outcome="ok")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    parsed = [json.loads(line) for line in lines]
    assert parsed[0]["level"] == "warning"
    assert parsed[0]["logger"] == "apscheduler.executors.default"
    assert "maximum number of running instances" in parsed[0]["event"]
    assert "timestamp" in parsed[0]
    assert SECRET not in lines[0]
    assert parsed[1]["event"] == "cycle finished"


def test_reconfiguring_logging_keeps_one_standard_handler() -> None:
    configure_logging("json", "info")
    configure_logging("console", "info")
    ours = [h for h in logging.getLogger().handlers if type(h).__name__ == "_StandardHandler"]
    assert len(ours) == 1


# --------------------------------------------------------------------------- item 4: health


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_a_long_first_sync_stays_alive_while_it_makes_progress() -> None:
    """Three hours into a first full sync that keeps handling invoices: alive (200), not yet
    ready. Before, /healthz turned 503 after 25 minutes and liveness would restart it."""
    clock = _Clock()
    health = DaemonHealth(interval=300, clock=clock)
    health.cycle_started()
    for _ in range(180):
        clock.advance(60)
        health.progress()
    alive, why = health.liveness()
    assert alive, why
    assert "running" in why
    ready, why = health.readiness()
    assert not ready
    assert why == "first cycle still running"


def test_a_stuck_cycle_is_not_alive() -> None:
    clock = _Clock()
    health = DaemonHealth(interval=60, clock=clock)
    health.cycle_started()
    clock.advance(stall_limit(60) + 1)
    alive, why = health.liveness()
    assert not alive
    assert "without progress" in why


def test_readiness_follows_the_last_outcome_liveness_does_not() -> None:
    clock = _Clock()
    health = DaemonHealth(interval=60, clock=clock)
    health.cycle_started()
    clock.advance(5)
    health.record("failed", 5.0, None)
    assert health.readiness() == (True, "last cycle failed 0 s ago")
    health.cycle_started()
    health.record("aborted", 1.0, "reading Kantata failed: HTTP 503")
    ready, why = health.readiness()
    assert not ready
    assert why.startswith("last cycle aborted 0 s ago")
    assert health.liveness()[0]
    clock.advance(60 + stall_limit(60) + 1)  # no cycle started since: the scheduler is stuck
    assert not health.liveness()[0]


def test_every_http_exchange_reaches_the_observer() -> None:
    """The transport reports each exchange's seconds and status (None without an answer):
    what feeds the request-duration histogram and the daemon's liveness."""
    answers = iter([httpx.Response(503), httpx.Response(200, json={})])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/down"):
            raise httpx.ConnectError("refused", request=request)
        return next(answers)

    seen: list[tuple[float, int | None]] = []
    transport = ApiTransport(
        "noko",
        "https://api.example.test/v2",
        {"X-NokoToken": SECRET},
        rate=None,
        burst=1,
        retry=RetryPolicy(max_attempts=2, initial_delay=0, jitter=False),
        timeout=5.0,
        transport=httpx.MockTransport(handler),
        sleep=lambda _seconds: None,
    )
    transport.stats.observer = lambda seconds, status: seen.append((seconds, status))
    try:
        transport.request_json("GET", "invoices")
        with pytest.raises(ApiError):
            transport.request_json("GET", "down")
    finally:
        transport.close()
    assert [status for _, status in seen] == [503, 200, None, None]
    assert all(seconds >= 0 for seconds, _ in seen)


# --------------------------------------------------------------------------- endpoint


def _stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


def _serve(store: Store, **kwargs: Any) -> tuple[str, ThreadingHTTPServer, Metrics]:
    metrics = Metrics()
    health = DaemonHealth(interval=60)
    health.record("failed", 2.5, None)
    server = serve(
        "127.0.0.1",
        0,
        store=store,
        stats={},
        health=health,
        render_html=lambda report: "<html>report</html>",
        metrics=metrics,
        **kwargs,
    )
    return f"http://127.0.0.1:{server.server_address[1]}", server, metrics


def test_metrics_operators_expect(store: Store) -> None:
    """build_info, last success, cycles by outcome, request durations per API and status
    class, rate-limit waits and the process metrics."""
    run = store.start_run("r1", "sync", None)
    run.outcome = "ok"
    store.finish_run(run)
    base, server, metrics = _serve(store)
    try:
        observe = metrics.observer("noko")
        observe(0.2, 201)
        observe(0.3, 429)
        observe(5.0, None)
        status, body = _get(base + "/metrics")
    finally:
        _stop(server)
    text = body.decode()
    assert status == 200
    assert 'kantata_sync_build_info{python="' in text
    assert "kantata_sync_last_success_timestamp_seconds " in text
    assert 'kantata_sync_cycles_total{outcome="failed"} 1.0' in text
    assert 'kantata_sync_cycles_total{outcome="ok"} 0.0' in text
    assert 'kantata_sync_last_cycle_outcome{outcome="failed"} 1.0' in text
    for status_class in ("2xx", "4xx", "error"):
        assert (
            "kantata_sync_api_request_duration_seconds_count"
            f'{{api="noko",status_class="{status_class}"}} 1.0'
        ) in text
    assert "kantata_sync_rate_limit_wait_seconds" in text
    assert "process_cpu_seconds_total" in text
    success = next(
        line for line in text.splitlines() if line.startswith("kantata_sync_last_success_")
    )
    assert float(success.split()[-1]) > 0


def test_status_on_loopback_is_open_and_exposed_needs_a_token(store: Store, tmp_path: Path) -> None:
    base, server, _ = _serve(store)
    try:
        assert _get(base + "/status.json")[0] == 200
        assert _get(base + "/healthz")[0] == 200
    finally:
        _stop(server)
    base, server, _ = _serve(store, exposed=True)
    try:
        status, body = _get(base + "/status")
        assert status == 403
        assert b"KANTATA_SYNC_STATUS_TOKEN_FILE" in body
        assert _get(base + "/status.json")[0] == 403
        assert _get(base + "/metrics")[0] == 200
        assert _get(base + "/readyz")[0] == 200
    finally:
        _stop(server)
    token_file = tmp_path / "status-token"
    token_file.write_text("s3cret-status\n")
    base, server, _ = _serve(store, exposed=True, status_token_file=token_file)
    try:
        assert _get(base + "/status")[0] == 401
        assert _get(base + "/status", {"Authorization": "Bearer wrong"})[0] == 401
        good = {"Authorization": "Bearer s3cret-status"}
        assert _get(base + "/status", good) == (200, b"<html>report</html>")
        assert _get(base + "/status.json", good)[0] == 200
        token_file.write_text("rotated")  # read at every request
        assert _get(base + "/status", good)[0] == 401
        assert _get(base + "/status", {"Authorization": "Bearer rotated"})[0] == 200
    finally:
        _stop(server)


# --------------------------------------------------------------------------- webhook


class _Hook:
    """A loopback webhook that records what it is sent; `fail` makes it answer 500."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = False
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if hook.fail:
                    self.send_response(500)
                else:
                    hook.bodies.append(body)
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/{SECRET}"


@pytest.fixture
def hook() -> Iterator[_Hook]:
    h = _Hook()
    yield h
    _stop(h.server)


def test_webhook_is_told_once_per_problem_and_once_when_it_clears(
    box: Sandbox, tmp_path: Path, hook: _Hook
) -> None:
    generate(box.kantata, seed=63, invoices=4, draft_rate=0, cancelled_rate=0)
    victim = _eligible(box)[0]
    box.kantata.corrupt_invoice(victim, "currency", "XXX")
    register_secret(SECRET)
    settings = settings_for(box, tmp_path, kantata_sync_webhook_url=hook.url)
    hook.fail = True
    with open_connector(settings) as c:
        c.engine.run_cycle()
        assert notify(c.store, settings.webhook_url()) is False  # a failure is not raised
        hook.fail = False
        for _ in range(3):  # retried, fails again: told once
            c.engine.run_cycle(only_ids=[str(victim)])
            notify(c.store, settings.webhook_url())
    assert len(hook.bodies) == 1
    text = hook.bodies[0]["text"]
    assert f"Kantata invoice {victim} failed" in text
    assert "currency" in text
    assert SECRET not in text
    assert "sandbox-kantata-token" not in text
    # A restart (a new process, the same state file) does not repeat it.
    with open_connector(settings) as c:
        assert notify(c.store, settings.webhook_url()) is False
        with box.kantata.mutex:  # the field fixed in Kantata: the corruption undone
            box.kantata._invoice_or_404(victim).raw_overrides.clear()
        box.kantata.touch([victim])
        assert c.engine.run_cycle().final_outcome == "ok"
        assert notify(c.store, settings.webhook_url()) is True
        assert notify(c.store, settings.webhook_url()) is False
    assert len(hook.bodies) == 2
    assert f"Kantata invoice {victim} is synced now" in hook.bodies[1]["text"]


# --------------------------------------------------------------------------- item 9: tokens


def test_token_file_replaced_while_running_is_used_at_the_next_cycle(
    box: Sandbox, tmp_path: Path
) -> None:
    """Noko's token rotated: once its file holds the new one, the next cycle uses it without a
    restart, and the request counters carry on. SIGHUP reads the files at once."""
    generate(box.kantata, seed=64, invoices=3, draft_rate=0, cancelled_rate=0)
    token_file = tmp_path / "noko-token"
    token_file.write_text("sandbox-noko-token\n")
    settings = settings_for(box, tmp_path, noko_token=None, noko_token_file=token_file)
    health = DaemonHealth(interval=60)
    daemon = Daemon(settings, stop=threading.Event(), health=health, metrics=Metrics())
    try:
        first = daemon.cycle()
        assert first is not None
        assert first.final_outcome == "ok"
        requests_before = daemon.stats.totals()["noko"]["requests"]
        box.noko.token = "rotated-noko-token"
        token_file.write_text("rotated-noko-token\n")
        changed = _eligible(box)[0]
        box.kantata.update_invoice(changed, message="changed after the rotation")
        second = daemon.cycle()
        assert second is not None
        assert second.final_outcome == "ok", second.failed or second.error
        assert second.counts["updated"] == 1
        assert daemon.stats.totals()["noko"]["requests"] > requests_before
        assert health.last_outcome == "ok"
        # SIGHUP: read again at once; unchanged, then an unreadable file keeps the token.
        assert daemon.reload_tokens("SIGHUP") == []
        token_file.unlink()
        assert daemon.reload_tokens("SIGHUP") == []
        token_file.write_text("sandbox-noko-token")
        assert daemon.reload_tokens("SIGHUP") == ["noko"]
    finally:
        daemon.close()


# --------------------------------------------------------------------------- the daemon


_LINES: dict[int, queue.Queue[str | None]] = {}


def _lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The process's stderr lines, read by a thread of their own (a select() on the pipe
    misses lines already taken into the file object's buffer)."""
    if proc.pid not in _LINES:
        lines: queue.Queue[str | None] = queue.Queue()
        stream = proc.stderr
        assert stream is not None

        def pump() -> None:
            for line in stream:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        _LINES[proc.pid] = lines
    return _LINES[proc.pid]


def _read_json_line(proc: subprocess.Popen[str], want: str, seen: list[str]) -> dict[str, Any]:
    lines = _lines_of(proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        parsed: dict[str, Any] = json.loads(line)
        if parsed.get("event") == want:
            return parsed
    raise AssertionError(f"no {want!r} line in {seen}")


def test_daemon_serves_liveness_readiness_and_rereads_tokens_on_sighup(
    box: Sandbox, tmp_path: Path
) -> None:
    """`run`: /healthz and /readyz answer, SIGHUP reads the token files again, and every log
    line is JSON."""
    generate(box.kantata, seed=65, invoices=3, draft_rate=0, cancelled_rate=0)
    (tmp_path / "kantata-token").write_text("sandbox-kantata-token")
    env = cli_env(
        box,
        tmp_path,
        KANTATA_TOKEN="",
        KANTATA_TOKEN_FILE=str(tmp_path / "kantata-token"),
        KANTATA_SYNC_METRICS_PORT="0",
    )
    seen: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "connector.faces.cli", "run", "--interval", "600"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        _drive_daemon(proc, seen)
    for line in seen:
        json.loads(line)


def _drive_daemon(proc: subprocess.Popen[str], seen: list[str]) -> None:
    try:
        url = _read_json_line(proc, "health and metrics endpoint listening", seen)["url"]
        base = url.removesuffix("/healthz")
        finished = _read_json_line(proc, "cycle finished", seen)
        assert finished["outcome"] == "ok"
        for _ in range(50):
            status, body = _get(base + "/readyz")
            if status == 200:
                break
            time.sleep(0.1)
        assert json.loads(body) == {"ready": True, "reason": json.loads(body)["reason"]}
        assert json.loads(body)["reason"].startswith("last cycle ok")
        status, body = _get(base + "/healthz")
        assert status == 200
        assert json.loads(body)["reason"].startswith("idle; last cycle ok")
        status, body = _get(base + "/metrics")
        assert status == 200
        assert (
            b'kantata_sync_api_request_duration_seconds_count{api="kantata",status_class="2xx"}'
            in body
        )
        proc.send_signal(signal.SIGHUP)
        _read_json_line(proc, "token files read again; unchanged", seen)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = _lines_of(proc)
    while (line := lines.get(timeout=30)) is not None:
        seen.append(line)


def test_webhook_setting_is_checked_without_repeating_the_url() -> None:
    """A Slack webhook URL is its own key: a bad one is named by its setting, never shown."""
    from connector.errors import ConfigError
    from connector.faces.config import load_settings

    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"KANTATA_SYNC_WEBHOOK_URL": "ftp://hooks.example/T0/B0/key-123"})
    assert "KANTATA_SYNC_WEBHOOK_URL" in str(caught.value)
    assert "key-123" not in str(caught.value)
    with pytest.raises(ConfigError, match="plain http"):
        load_settings(environ={"KANTATA_SYNC_WEBHOOK_URL": "http://hooks.example/T0/B0/key-123"})
    settings = load_settings(environ={"KANTATA_SYNC_WEBHOOK_URL": "https://hooks.example/x"})
    assert settings.webhook_url() == "https://hooks.example/x"
    assert "hooks.example" not in repr(settings)
