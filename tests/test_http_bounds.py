"""The HTTP layer's bounds over real HTTP on loopback: a whole request ends by its timeout
however slowly its answer trickles in, the retries of one request by their total, a body or
header block over its bound is refused while it streams, and a stop request ends every wait
and every answer in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from connector.errors import AmbiguousWriteError, PermanentApiError, TransientApiError
from connector.http import MAX_HEADER_BYTES, ApiTransport, RetryPolicy
from tests.loopback import LoopbackServer, Reply, json_reply, trickle

TOKEN = "bounds-token-0123456789abcdef"
BODY = b'{"id": 1, "note": "' + b"x" * 200 + b'"}'


def _trickled(interval: float) -> Reply:
    """Headers at once, then the body one byte every `interval` seconds."""

    def reply(head: bytes, body: bytes) -> bytes:
        answer = json_reply(BODY)
        return trickle(answer, at_once=len(answer) - len(BODY), interval=interval)

    return reply


def _silent(head: bytes, body: bytes) -> bytes:
    return b""  # read, never answered


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], LoopbackServer]]:
    servers: list[LoopbackServer] = []

    def start(reply: Reply) -> LoopbackServer:
        server = LoopbackServer(reply)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _api(
    url: str,
    *,
    timeout: float,
    attempts: int = 1,
    max_total: float = 300.0,
    rate: float | None = None,
    stop: threading.Event | None = None,
    max_body: int = 64 * 1024 * 1024,
    transport: httpx.BaseTransport | None = None,
) -> ApiTransport:
    return ApiTransport(
        "kantata",
        url,
        {"Authorization": f"Bearer {TOKEN}", "User-Agent": "test/1.0"},
        rate=rate,
        burst=1,
        retry=RetryPolicy(max_attempts=attempts, initial_delay=0.01, max_total=max_total),
        timeout=timeout,
        stop=stop,
        max_body=max_body,
        transport=transport,
    )


def _timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


# -- a whole request ends by its timeout ------------------------------------------------------


def test_a_trickled_answer_ends_by_the_timeout_of_the_whole_request(
    serve: Callable[[Reply], LoopbackServer],
) -> None:
    """A body arriving a byte every 0.1 s (each read well within the timeout) takes 20 s in
    all; with a 1 s timeout and 2 attempts the GET gives up after about 2 s."""
    server = serve(_trickled(0.1))
    api = _api(server.url, timeout=1.0, attempts=2)

    def call() -> None:
        with pytest.raises(TransientApiError, match=r"ReadTimeout.*gave up after 2 attempts"):
            api.request_json("GET", "/invoices.json")

    try:
        elapsed = _timed(call)
    finally:
        api.close()
    assert 1.9 < elapsed < 4.0
    assert len(server.requests) == 2


def test_a_trickled_answer_to_a_post_is_a_write_in_doubt(
    serve: Callable[[Reply], LoopbackServer],
) -> None:
    """The POST was sent and its answer did not finish in time: it may have been applied, so it
    is not sent again."""
    server = serve(_trickled(0.1))
    api = _api(server.url, timeout=1.0, attempts=3)
    try:
        with pytest.raises(AmbiguousWriteError, match="ReadTimeout"):
            api.request_json("POST", "/invoices.json", body={"a": 1})
    finally:
        api.close()
    assert len(server.requests) == 1


def test_the_retries_of_one_request_have_a_total_deadline(
    serve: Callable[[Reply], LoopbackServer],
) -> None:
    """Ten attempts of 0.5 s would take 5 s; the request's total of 1.2 s ends them, the last
    attempt cut to what is left."""
    server = serve(_silent)
    api = _api(server.url, timeout=0.5, attempts=10, max_total=1.2)

    def call() -> None:
        with pytest.raises(TransientApiError):
            api.request_json("GET", "/invoices.json")

    try:
        elapsed = _timed(call)
    finally:
        api.close()
    assert 1.0 < elapsed < 2.0
    assert len(server.requests) < 10


# -- bounded answers --------------------------------------------------------------------------


def _big_body(head: bytes, body: bytes) -> bytes:
    return json_reply(b'{"x": "' + b"y" * 300_000 + b'"}')


def test_a_body_over_the_bound_fails_that_request_and_is_not_retried(
    serve: Callable[[Reply], LoopbackServer],
) -> None:
    server = serve(_big_body)
    api = _api(server.url, timeout=5.0, attempts=4, max_body=100_000)
    try:
        with pytest.raises(PermanentApiError) as info:
            api.request_json("GET", "/invoices.json")
        with pytest.raises(AmbiguousWriteError, match="over the limit of 100000 bytes"):
            api.request_json("POST", "/invoices.json", body={})
    finally:
        api.close()
    message = str(info.value)
    assert message.startswith("kantata ")
    assert "response body over the limit of 100000 bytes" in message
    assert "KANTATA_SYNC_HTTP_MAX_BODY_BYTES" in message
    assert len(server.requests) == 2  # one each: not retried


def test_an_endless_body_is_cut_at_the_bound_not_read_whole(
    serve: Callable[[Reply], LoopbackServer],
) -> None:
    """A Content-Length of 900 MB and a body that keeps coming: refused at the bound, soon."""

    def endless(head: bytes, body: bytes) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: 900000000\r\n\r\n" + b" " * 4_000_000
        )

    server = serve(endless)
    api = _api(server.url, timeout=5.0, max_body=1_000_000)
    try:
        with pytest.raises(PermanentApiError, match="over the limit of 1000000 bytes"):
            api.request_json("GET", "/invoices.json")
    finally:
        api.close()


def test_a_gzip_bomb_is_bounded_by_what_it_decodes_to() -> None:
    import gzip

    bomb = gzip.compress(b" " * 5_000_000)
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=bomb)
    )
    api = _api(
        "https://kantata.example.test/api/v1", timeout=5.0, max_body=1_000_000, transport=transport
    )
    with pytest.raises(PermanentApiError, match="over the limit of 1000000 bytes"):
        api.request_json("GET", "/invoices.json")


def test_a_header_block_over_the_bound_is_refused() -> None:
    """Over the transport's own bound (any transport), and over h11's (100 KiB) on the wire."""
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"X-Big": "a" * MAX_HEADER_BYTES}, json={})
    )
    api = _api("https://kantata.example.test/api/v1", timeout=5.0, attempts=3, transport=transport)
    with pytest.raises(PermanentApiError, match="header block over 65536 bytes"):
        api.request_json("GET", "/invoices.json")


def test_a_header_block_over_h11_s_bound_is_refused_on_the_wire(
    serve: Callable[[Reply], LoopbackServer],
) -> None:
    def huge_headers(head: bytes, body: bytes) -> bytes:
        return json_reply(b"{}", extra=b"X-Big: " + b"a" * 200_000 + b"\r\n")

    server = serve(huge_headers)
    api = _api(server.url, timeout=5.0, attempts=3)
    try:
        with pytest.raises(PermanentApiError, match="header block over 102400 bytes"):
            api.request_json("GET", "/invoices.json")
    finally:
        api.close()
    assert len(server.requests) == 1


# -- a stop request ends every wait -----------------------------------------------------------


def _stop_after(seconds: float) -> threading.Event:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    return stop


def test_a_stop_ends_a_trickled_answer_between_two_reads(
    serve: Callable[[Reply], LoopbackServer],
) -> None:
    server = serve(_trickled(0.1))
    api = _api(server.url, timeout=60.0, attempts=5, stop=_stop_after(0.5))

    def call() -> None:
        with pytest.raises(AmbiguousWriteError, match="stopped while the answer was arriving"):
            api.request_json("POST", "/invoices.json", body={"a": 1})

    try:
        elapsed = _timed(call)
        with pytest.raises(TransientApiError, match="stopped before the request was sent"):
            api.request_json("GET", "/invoices.json")
    finally:
        api.close()
    assert elapsed < 1.5
    assert len(server.requests) == 1  # the GET after the stop was not sent


def test_a_stop_ends_the_retry_backoff(serve: Callable[[Reply], LoopbackServer]) -> None:
    """A 503 asking for 30 s: the wait before the retry ends with the stop."""

    def unavailable(head: bytes, body: bytes) -> bytes:
        return b"HTTP/1.1 503 X\r\nRetry-After: 30\r\nContent-Length: 0\r\n\r\n"

    server = serve(unavailable)
    api = _api(server.url, timeout=5.0, attempts=3, stop=_stop_after(0.3))

    def call() -> None:
        with pytest.raises(TransientApiError) as info:
            api.request_json("GET", "/invoices.json")
        assert not isinstance(info.value, AmbiguousWriteError)

    try:
        elapsed = _timed(call)
    finally:
        api.close()
    assert elapsed < 1.5
    assert len(server.requests) == 1


def test_a_stop_ends_the_wait_for_the_rate_limit(serve: Callable[[Reply], LoopbackServer]) -> None:
    """At 0.1 request per second the second request would wait 10 s; the stop ends the wait
    and the request is not sent."""
    server = serve(lambda head, body: json_reply(b"{}"))
    api = _api(server.url, timeout=5.0, rate=0.1, stop=_stop_after(0.3))
    try:
        api.request_json("GET", "/invoices.json")

        def call() -> None:
            with pytest.raises(TransientApiError, match="stopped before the request was sent"):
                api.request_json("POST", "/invoices.json", body={})

        elapsed = _timed(call)
    finally:
        api.close()
    assert elapsed < 1.5
    assert len(server.requests) == 1


def test_a_wait_for_the_rate_limit_is_not_taken_from_the_attempt_s_timeout() -> None:
    """At one request a second, the second request waits a second for its turn; its attempt
    still gets the whole timeout (0.5 s) once it goes."""
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    seen: list[dict[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={})

    api = ApiTransport(
        "noko",
        "https://noko.example.test/v2",
        {"X-NokoToken": TOKEN, "User-Agent": "test/1.0"},
        rate=1.0,
        burst=1,
        retry=RetryPolicy(max_attempts=1),
        timeout=0.5,
        transport=httpx.MockTransport(handler),
        sleep=sleep,
        clock=lambda: now[0],
    )
    for _ in range(3):
        api.request_json("GET", "/invoices")
    assert now[0] == pytest.approx(2.0)
    assert [timeouts["read"] for timeouts in seen] == [0.5, 0.5, 0.5]
    assert api.stats.snapshot()["errors"] == 0
