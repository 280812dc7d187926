"""The CLI against answers that trickle in: `sync` ends by its timeouts, and SIGTERM ends the
daemon within 10 s with exit 0, leaving only what recovery handles. Settings that would mean
no timeout at all are refused with one line."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from connector.faces.cli import app
from sandbox import Sandbox, generate
from tests.e2e import check_books, cli_env, run_cli
from tests.faults_support import CliProcess, assert_no_traceback, reaping, wait_until
from tests.loopback import LoopbackServer, response_bytes, trickle


class TrickleProxy:
    """A loopback server in front of one fake: every request goes to the fake at once, and the
    answer comes back with its headers at once and its body one byte a second when `slow`
    says so for that request line (with `stall`, no byte of it at all)."""

    def __init__(self, target: str, slow: Callable[[bytes], bool], *, stall: bool = False) -> None:
        parts = urlsplit(target)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._client = httpx.Client()
        self._slow = slow
        self._stall = stall
        self.server = LoopbackServer(self._reply)
        self.url = f"http://127.0.0.1:{self.server.port}{parts.path}"
        self.slow_seen = 0

    def _reply(self, head: bytes, body: bytes) -> bytes:
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = [tuple(line.split(": ", 1)) for line in lines if ": " in line]
        answer = self._client.request(
            method,
            self._origin + target,
            headers=[(k, v) for k, v in headers if k.lower() not in ("host", "content-length")],
            content=body,
        )
        raw = response_bytes(answer.status_code, list(answer.headers.items()), answer.content)
        if not self._slow(request_line.encode()):
            return raw
        self.slow_seen += 1
        if self._stall:
            return b""  # applied, and never a byte of the answer
        return trickle(raw, at_once=len(raw) - len(answer.content), interval=1.0)

    def close(self) -> None:
        self.server.close()
        self._client.close()


@pytest.mark.parametrize("value", ["inf", "-inf", "-5", "0", "nan", "abc", "1e400"])
def test_a_timeout_that_is_no_timeout_is_refused(value: str) -> None:
    result = CliRunner().invoke(app, ["sync"], env={"KANTATA_TIMEOUT": value})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "KANTATA_TIMEOUT" in lines[0]
    assert "Traceback" not in result.output


def test_sync_ends_by_its_timeouts_when_every_kantata_answer_trickles(
    box: Sandbox, tmp_path: Path
) -> None:
    """Every Kantata body at one byte a second, KANTATA_TIMEOUT=3, two attempts: `sync` ends
    (failing the cycle) well within 20 s instead of reading for hours."""
    generate(box.kantata, seed=5, invoices=3)
    proxy = TrickleProxy(box.kantata_url, lambda line: True)
    env = cli_env(
        box,
        tmp_path,
        KANTATA_BASE_URL=proxy.url,
        KANTATA_TIMEOUT="3",
        KANTATA_SYNC_HTTP_MAX_ATTEMPTS="2",
    )
    try:
        started = time.monotonic()
        result = run_cli(["sync"], env, tmp_path, timeout=60)
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    assert elapsed < 20, elapsed
    assert result.returncode != 0
    assert_no_traceback(result.stdout, result.stderr)


@pytest.mark.parametrize("stall", [False, True], ids=["trickled", "no-answer"])
def test_sigterm_during_a_slow_post_ends_the_daemon_in_10_s(
    box: Sandbox, tmp_path: Path, stall: bool
) -> None:
    """The daemon is creating an invoice whose answer trickles in, or never comes (60 s
    timeout): SIGTERM ends it within 10 s with exit 0, and the next `sync` finds the invoice by
    its reference instead of creating it twice."""
    generate(box.kantata, seed=7, invoices=4)
    proxy = TrickleProxy(
        box.noko_url, lambda line: line.startswith(b"POST /v2/invoices"), stall=stall
    )
    env = cli_env(box, tmp_path, NOKO_BASE_URL=proxy.url, KANTATA_SYNC_WORKERS="1")
    try:
        with reaping() as started:
            daemon = CliProcess(["run"], env, tmp_path, "daemon")
            started.append(daemon)
            assert wait_until(lambda: proxy.slow_seen > 0, 60), daemon.stderr[-3000:]
            time.sleep(1.5)  # a byte or two of the answer in
            sent = time.monotonic()
            daemon.signal(signal.SIGTERM)
            code = daemon.wait(timeout=30)
            took = time.monotonic() - sent
    finally:
        proxy.close()
    assert code == 0, daemon.stderr[-3000:]
    assert took < 10, took
    assert_no_traceback(daemon.stdout, daemon.stderr)
    again = run_cli(["sync"], cli_env(box, tmp_path), tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    books = check_books(box)
    assert not books.problems, books.problems
