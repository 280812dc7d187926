"""The HTTP boundary: pacing, retry decisions, error translation, secrecy of tokens."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
from structlog.testing import capture_logs

from connector.errors import (
    AmbiguousWriteError,
    ApiError,
    AuthError,
    NotFoundError,
    PermanentApiError,
    TransientApiError,
)
from connector.http import (
    MAX_REDIRECTS,
    ApiTransport,
    RetryPolicy,
    TokenBucket,
    decode_json,
    describe_error_body,
    encode_json,
    endpoint_template,
    parse_retry_after,
)
from tests.loopback import LoopbackServer, json_reply

BASE = "https://api.example.test/v2"
TOKEN = "tok-SECRET-1234567890"
FAST = RetryPolicy(max_attempts=3, initial_delay=0.25, max_delay=2.0, max_total=60.0, jitter=False)


class FakeClock:
    """A monotonic clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def make_transport(
    clock: FakeClock, *, rate: float | None = None, burst: int = 1, retry: RetryPolicy = FAST
) -> ApiTransport:
    return ApiTransport(
        "noko",
        BASE,
        {"X-NokoToken": TOKEN, "User-Agent": "test/1.0", "Accept": "application/json"},
        rate=rate,
        burst=burst,
        retry=retry,
        timeout=5.0,
        # httpx's own pool, which respx intercepts.
        transport=httpx.HTTPTransport(),
        sleep=clock.sleep,
        clock=clock,
    )


class Recorder:
    """An in-process transport that keeps every request and answers from a handler."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.handler = handler or (lambda request: httpx.Response(200, json={}))
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


def recorded_transport(
    clock: FakeClock,
    recorder: Recorder,
    *,
    base: str = BASE,
    headers: dict[str, str] | None = None,
) -> ApiTransport:
    return ApiTransport(
        "noko",
        base,
        headers if headers is not None else {"X-NokoToken": TOKEN, "User-Agent": "test/1.0"},
        rate=None,
        burst=1,
        retry=FAST,
        timeout=5.0,
        transport=recorder.transport,
        sleep=clock.sleep,
        clock=clock,
    )


# -- TokenBucket ------------------------------------------------------------------------------


def test_bucket_paces_ten_requests_at_two_per_second(clock: FakeClock) -> None:
    """Ten acquires at rate 2, burst 1, wait 4.5 s in total, 0.5 s apart."""
    bucket = TokenBucket(2.0, 1, clock=clock, sleep=clock.sleep)
    waits = [bucket.acquire() for _ in range(10)]
    assert sum(waits) == pytest.approx(4.5)
    assert waits[0] == 0.0
    assert waits[1:] == pytest.approx([0.5] * 9)


def test_bucket_burst_is_free(clock: FakeClock) -> None:
    """The first `burst` acquires do not wait."""
    bucket = TokenBucket(2.0, 3, clock=clock, sleep=clock.sleep)
    waits = [bucket.acquire() for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.5])


def test_bucket_refills_while_idle(clock: FakeClock) -> None:
    """Idle time refills the bucket, up to the burst size."""
    bucket = TokenBucket(1.0, 2, clock=clock, sleep=clock.sleep)
    bucket.acquire()
    bucket.acquire()
    clock.now += 100.0
    assert [bucket.acquire() for _ in range(3)] == pytest.approx([0.0, 0.0, 1.0])


@pytest.mark.parametrize("rate", [None, 0.0, -1.0])
def test_bucket_unlimited(rate: float | None, clock: FakeClock) -> None:
    """A missing or non-positive rate never waits."""
    bucket = TokenBucket(rate, clock=clock, sleep=clock.sleep)
    assert [bucket.acquire() for _ in range(50)] == [0.0] * 50
    assert clock.sleeps == []


def test_bucket_is_thread_safe() -> None:
    """Threads sharing one bucket each get their own slot: no two wait the same time."""
    bucket = TokenBucket(2.0, 1, clock=lambda: 0.0, sleep=lambda _s: None)
    waits: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            waited = bucket.acquire()
            with lock:
                waits.append(waited)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == pytest.approx([i * 0.5 for i in range(40)])


# -- RetryPolicy and Retry-After --------------------------------------------------------------


def test_backoff_doubles_up_to_max_delay() -> None:
    """Without jitter the delay doubles from initial_delay and stops at max_delay."""
    policy = RetryPolicy(initial_delay=0.5, max_delay=3.0, jitter=False)
    assert [policy.delay(n, None) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_full_jitter_stays_under_ceiling() -> None:
    """Full jitter picks a delay between zero and the exponential ceiling."""
    policy = RetryPolicy(initial_delay=1.0, max_delay=4.0)
    delays = [policy.delay(3, None) for _ in range(200)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(7.0, 7.0), (45.0, 45.0), (999.0, 300.0), (-3.0, 0.0)],
)
def test_retry_after_beats_backoff(retry_after: float, expected: float) -> None:
    """Retry-After is honoured as given, above max_delay, but never beyond max_total."""
    policy = RetryPolicy(max_delay=30.0, max_total=300.0)
    assert policy.delay(1, retry_after) == expected


def test_parse_retry_after_forms() -> None:
    """Retry-After parses as seconds or as an HTTP date; garbage and absence give None."""
    now = datetime(2024, 3, 1, 10, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2024, 3, 1, 10, 0, 12, tzinfo=UTC), usegmt=True)
    earlier = format_datetime(datetime(2024, 3, 1, 9, 0, 0, tzinfo=UTC), usegmt=True)
    assert parse_retry_after("3", now=now) == 3.0
    assert parse_retry_after(" 1.5 ", now=now) == 1.5
    assert parse_retry_after(later, now=now) == pytest.approx(12.0)
    assert parse_retry_after(earlier, now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after("", now=now) is None
    assert parse_retry_after(None, now=now) is None


# -- JSON -------------------------------------------------------------------------------------


def test_decode_json_keeps_decimals() -> None:
    """JSON numbers with a fraction decode as exact Decimals; integers stay int."""
    body = decode_json(b'{"total_amount": 189.33, "n": 3, "tiny": 0.1}')
    assert body == {"total_amount": Decimal("189.33"), "n": 3, "tiny": Decimal("0.1")}
    assert isinstance(body["total_amount"], Decimal)


def test_decode_json_rejects_nan() -> None:
    """NaN is not JSON and never an amount."""
    with pytest.raises(ValueError, match="non-finite"):
        decode_json(b'{"total_amount": NaN}')


def test_encode_json_writes_exact_numbers() -> None:
    """Decimal prices go out as exact JSON numbers, trailing zeros kept."""
    assert encode_json({"price": Decimal("14.50"), "n": [Decimal("0.10")]}) == (
        b'{"price":14.50,"n":[0.10]}'
    )


class _Amount(float):
    pass


class _Record(dict[str, Any]):
    pass


@pytest.mark.parametrize(
    "body",
    [
        {"items": [{"price": 0.1}]},
        0.5,
        [1, "x", None, True, Decimal("1.5"), 2.0],
        {"a": {"b": {"c": ({"d": [Decimal("1"), (1e9,)]},)}}},
        {"amount": _Amount(3)},
        _Record(total=1.25),
        {"ok": Decimal("1.10"), "nested": _Record(x=[{"y": float("nan")}])},
    ],
)
def test_encode_json_refuses_float(body: Any) -> None:
    """A float anywhere in a body is a bug: money must not pass through binary floats."""
    with pytest.raises(TypeError, match="never float"):
        encode_json(body)


def test_encode_json_walks_everything_but_floats() -> None:
    """Bodies without a float go out whole: every JSON type, subclasses and deep nesting."""
    body: Any = {
        "s": "1.5",
        "i": 3,
        "b": False,
        "n": None,
        "d": Decimal("-0.00"),
        "l": [Decimal("2.5"), ("t", 1)],
        "r": _Record(k=[{}, []]),
    }
    for _ in range(50):
        body = {"deeper": [body]}
    encoded = encode_json(body)
    assert encoded.startswith(b'{"deeper":[' * 50)
    assert (
        b'{"s":"1.5","i":3,"b":false,"n":null,"d":-0.00,"l":[2.5,["t",1]],"r":{"k":[{},[]]}}'
        in (encoded)
    )


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("get", "/invoices/12.json", "GET /invoices/{id}.json"),
        ("PUT", "/invoices/12/add_taxes", "PUT /invoices/{id}/add_taxes"),
        ("GET", "/invoices?page=2", "GET /invoices"),
        ("GET", "/users/me.json", "GET /users/me.json"),
        ("DELETE", "/expenses/99", "DELETE /expenses/{id}"),
    ],
)
def test_endpoint_template(method: str, path: str, expected: str) -> None:
    """Endpoint keys fold numeric ids and drop the query."""
    assert endpoint_template(method, path) == expected


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (
            {"errors": [{"type": "validation", "message": "is invalid", "field": "date"}]},
            "validation: is invalid (field date)",
            None,
        ),
        (
            {"errors": [{"type": "oauth", "message": "a"}, {"type": "system", "message": "b"}]},
            "oauth: a; system: b",
            None,
        ),
        (
            {
                "message": "Invoice is paid",
                "errors": [{"resource": "Invoice", "field": "state", "code": "paid"}],
            },
            "Invoice is paid; Invoice state: paid",
            "paid",
        ),
        ({"message": "JSON Parsing Error"}, "JSON Parsing Error", None),
        ([1, 2], None, None),
    ],
)
def test_describe_error_body(body: Any, message: str | None, code: str | None) -> None:
    """Both APIs' error shapes become one readable line and the first code."""
    assert describe_error_body(body) == (message, code)


# -- ApiTransport: success paths --------------------------------------------------------------


def test_request_json_decodes_decimals(router: respx.MockRouter, clock: FakeClock) -> None:
    """request_json returns the body with Decimal amounts."""
    router.get("/invoices/5").respond(200, json={"total_amount": 189.33})
    body = make_transport(clock).request_json("GET", "/invoices/5")
    assert body == {"total_amount": Decimal("189.33")}


def test_request_json_204_is_none(router: respx.MockRouter, clock: FakeClock) -> None:
    """A 204 decodes to None."""
    router.put("/invoices/5/paid").respond(204)
    assert make_transport(clock).request_json("PUT", "/invoices/5/paid") is None


def test_body_sent_as_exact_json(router: respx.MockRouter, clock: FakeClock) -> None:
    """Request bodies carry Decimals as exact numbers, with a JSON content type."""
    route = router.post("/expenses").respond(201, json={"id": 1})
    make_transport(clock).request_json("POST", "/expenses", body={"price": Decimal("19.99")})
    request = route.calls.last.request
    assert request.content == b'{"price":19.99}'
    assert request.headers["content-type"] == "application/json"


def test_headers_sent_as_httpx_client_sent_them(clock: FakeClock) -> None:
    """Each request carries the headers httpx's client gave it, in its order: Host, httpx's
    defaults with ours over them, for a body its type and length; a bodiless PUT says
    Content-Length: 0, a GET no length at all."""
    recorder = Recorder()
    transport = recorded_transport(clock, recorder)
    transport.request_json("GET", "/invoices/1")
    transport.request("PUT", "/invoices/1/paid")
    transport.request_json("POST", "/invoices", body={"total": Decimal("1.50")})
    get, put, post = recorder.requests
    with httpx.Client(
        base_url=BASE,
        headers={"X-NokoToken": TOKEN, "User-Agent": "test/1.0"},
        transport=recorder.transport,
    ) as client:
        assert get.headers.raw == client.build_request("GET", "/invoices/1").headers.raw
        assert put.headers.raw == client.build_request("PUT", "/invoices/1/paid").headers.raw
        expected_post = client.build_request(
            "POST",
            "/invoices",
            content=b'{"total":1.50}',
            headers={"Content-Type": "application/json"},
        )
        assert post.headers.raw == expected_post.headers.raw
    assert get.headers.raw[0] == (b"Host", b"api.example.test")
    assert get.headers["x-nokotoken"] == TOKEN
    assert get.headers["user-agent"] == "test/1.0"
    assert get.headers["connection"] == "keep-alive"
    assert "content-length" not in get.headers
    assert put.headers["content-length"] == "0"
    assert "content-type" not in put.headers
    assert post.headers["content-type"] == "application/json"
    assert post.headers["content-length"] == str(len(b'{"total":1.50}'))
    assert post.content == b'{"total":1.50}'
    assert [put.content, get.content] == [b"", b""]


def test_timeout_set_on_every_request(clock: FakeClock) -> None:
    """Every request carries the transport's timeout for connect, read, write and pool."""
    recorder = Recorder()
    recorded_transport(clock, recorder).request_json("GET", "/invoices")
    assert recorder.requests[0].extensions["timeout"] == {
        "connect": 5.0,
        "read": 5.0,
        "write": 5.0,
        "pool": 5.0,
    }


@pytest.mark.parametrize(
    ("base", "path", "params"),
    [
        (BASE, "/invoices/12.json", {"include": "a,b", "page": 2, "paid": True}),
        (BASE, "invoices", {"q": "[KS-12/ Ünïcode & more", "e": "", "sp ace": "a+b=c"}),
        (BASE, "/a b/%41é/../c/./d", None),
        (BASE, "/a//b/", {"x": "~-._"}),
        (BASE, "/.well-known/x", None),
        ("http://127.0.0.1:8080/api/v1", "/workspaces.json", {"per_page": 200}),
        ("https://[::1]/v2", "/x/1", {"a": "b"}),
        ("https://bücher.example/v%20x", "/x/1", {"a": "b"}),
        (BASE, "/" + "x" * 9000, {"a": "b"}),
    ],
)
def test_urls_as_httpx_parses_them(
    base: str, path: str, params: dict[str, Any] | None, clock: FakeClock
) -> None:
    """The URL sent is the one httpx's client builds from the same base, path and params,
    whether it is put together from its parts or parsed."""
    recorder = Recorder()
    transport = recorded_transport(clock, recorder, base=base)
    transport.request_json("GET", path, params=params)
    sent = recorder.requests[0].url
    expected = httpx.Client(base_url=base).build_request("GET", path, params=params).url
    assert sent == expected
    assert str(sent) == str(expected)
    assert sent.raw_path == expected.raw_path


def test_basic_auth_from_url_credentials(clock: FakeClock) -> None:
    """Credentials in the base URL go out as Basic auth, as httpx's client sends them."""
    recorder = Recorder()
    transport = recorded_transport(clock, recorder, base="https://me:pw@api.example.test/v2")
    transport.request_json("GET", "/invoices")
    assert recorder.requests[0].headers["authorization"] == "Basic bWU6cHc="


def test_closed_transport_refuses_to_send(clock: FakeClock) -> None:
    """After close() nothing more is sent, as with a closed httpx client."""
    recorder = Recorder()
    transport = recorded_transport(clock, recorder)
    transport.close()
    with pytest.raises(RuntimeError, match="closed"):
        transport.request_json("GET", "/invoices")
    assert recorder.requests == []


def test_pacing_through_transport(router: respx.MockRouter, clock: FakeClock) -> None:
    """Ten requests at rate 2, burst 1 wait about 4.5 s before their attempts."""
    router.get("/projects").respond(200, json=[])
    transport = make_transport(clock, rate=2.0, burst=1)
    for _ in range(10):
        transport.request_json("GET", "/projects")
    assert transport.stats.wait_seconds == pytest.approx(4.5)
    assert transport.stats.requests == 10
    assert transport.stats.by_endpoint == {"GET /projects": 10}


def test_retries_are_paced_too(router: respx.MockRouter, clock: FakeClock) -> None:
    """Every attempt, retries included, goes through the token bucket."""
    router.get("/projects").mock(side_effect=[httpx.Response(500), httpx.Response(200, json=[])])
    transport = make_transport(clock, rate=1.0, burst=1, retry=FAST)
    transport.request_json("GET", "/projects")
    # retry delay 0.25 s, then the bucket makes up the rest of the 1 s slot
    assert clock.sleeps == pytest.approx([0.25, 0.75])
    assert transport.stats.wait_seconds == pytest.approx(0.75)


# -- ApiTransport: retry decisions ------------------------------------------------------------


def test_retry_after_honoured(router: respx.MockRouter, clock: FakeClock) -> None:
    """A 429 with Retry-After waits exactly that long before the next attempt."""
    route = router.get("/entries").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(429, headers={"Retry-After": "45"}),
            httpx.Response(200, json=[]),
        ]
    )
    transport = make_transport(clock, retry=RetryPolicy(max_delay=30.0, jitter=False))
    assert transport.request_json("GET", "/entries") == []
    assert clock.sleeps == [7.0, 45.0]
    assert route.call_count == 3
    assert transport.stats.status_429 == 2
    assert transport.stats.retries == 2


def test_retry_after_http_date(router: respx.MockRouter, clock: FakeClock) -> None:
    """A Retry-After given as an HTTP date waits until that moment."""
    when = datetime.now(UTC).timestamp() + 20
    header = format_datetime(datetime.fromtimestamp(when, UTC), usegmt=True)
    router.get("/entries").mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": header}),
            httpx.Response(200, json=[]),
        ]
    )
    make_transport(clock).request_json("GET", "/entries")
    assert len(clock.sleeps) == 1
    assert 17.0 <= clock.sleeps[0] <= 20.0


def test_retry_after_beyond_budget_gives_up(router: respx.MockRouter, clock: FakeClock) -> None:
    """A Retry-After longer than max_total is not slept through: a TransientApiError says when."""
    router.get("/entries").respond(429, headers={"Retry-After": "3600"})
    transport = make_transport(clock, retry=RetryPolicy(max_total=300.0, jitter=False))
    with pytest.raises(TransientApiError) as info:
        transport.request_json("GET", "/entries")
    assert clock.sleeps == []
    assert info.value.retry_after == 3600.0
    assert info.value.status == 429


def test_get_exhausts_retries(router: respx.MockRouter, clock: FakeClock) -> None:
    """An idempotent request retried max_attempts times raises TransientApiError."""
    route = router.get("/invoices").respond(502, text="<html>bad gateway</html>")
    with pytest.raises(TransientApiError) as info:
        make_transport(clock).request_json("GET", "/invoices")
    assert type(info.value) is TransientApiError
    assert route.call_count == FAST.max_attempts
    assert clock.sleeps == [0.25, 0.5]
    assert "gave up after 3 attempts" in str(info.value)
    assert info.value.retry_after is not None


@pytest.mark.parametrize(
    "error",
    [httpx.ReadTimeout, httpx.ConnectError, httpx.RemoteProtocolError, httpx.ConnectTimeout],
)
def test_get_retries_transport_errors(
    error: type[Exception], router: respx.MockRouter, clock: FakeClock
) -> None:
    """An idempotent request is retried after any timeout or dropped connection."""
    route = router.get("/invoices").mock(side_effect=[error("boom"), httpx.Response(200, json=[])])
    assert make_transport(clock).request_json("GET", "/invoices") == []
    assert route.call_count == 2


@pytest.mark.parametrize(
    "error", [httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteTimeout]
)
def test_post_not_retried_after_ambiguous_failure(
    error: type[Exception], router: respx.MockRouter, clock: FakeClock
) -> None:
    """A POST that may have reached the server is not retried: AmbiguousWriteError at once."""
    route = router.post("/invoices").mock(side_effect=error("lost"))
    with pytest.raises(AmbiguousWriteError):
        make_transport(clock).request_json("POST", "/invoices", body={"reference": "KS-1"})
    assert route.call_count == 1
    assert clock.sleeps == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_post_not_retried_after_5xx(
    status: int, router: respx.MockRouter, clock: FakeClock
) -> None:
    """A POST answered with any 5xx (503 too) may have been applied: AmbiguousWriteError."""
    route = router.post("/invoices").respond(status)
    with pytest.raises(AmbiguousWriteError) as info:
        make_transport(clock).request_json("POST", "/invoices", body={})
    assert info.value.status == status
    assert route.call_count == 1


@pytest.mark.parametrize(
    "first",
    [
        httpx.Response(429),
        httpx.Response(408),
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow"),
        httpx.PoolTimeout("busy"),
    ],
)
def test_post_retried_when_not_applied(
    first: httpx.Response | Exception, router: respx.MockRouter, clock: FakeClock
) -> None:
    """A POST is retried when it cannot have been applied: 429, 408, connect and pool errors."""
    route = router.post("/invoices").mock(side_effect=[first, httpx.Response(201, json={"id": 9})])
    assert make_transport(clock).request_json("POST", "/invoices", body={}) == {"id": 9}
    assert route.call_count == 2


def test_post_429_exhausted_is_transient_not_ambiguous(
    router: respx.MockRouter, clock: FakeClock
) -> None:
    """A POST refused by 429 every time was never applied: plain TransientApiError."""
    router.post("/invoices").respond(429)
    with pytest.raises(TransientApiError) as info:
        make_transport(clock).request_json("POST", "/invoices", body={})
    assert type(info.value) is TransientApiError


def test_put_marked_not_idempotent(router: respx.MockRouter, clock: FakeClock) -> None:
    """idempotent=False makes a PUT behave like a POST after a read timeout."""
    router.put("/invoices/1/add_taxes").mock(side_effect=httpx.ReadTimeout("lost"))
    with pytest.raises(AmbiguousWriteError):
        make_transport(clock).request("PUT", "/invoices/1/add_taxes", body={}, idempotent=False)


def test_post_marked_idempotent(router: respx.MockRouter, clock: FakeClock) -> None:
    """idempotent=True lets a POST be retried after a read timeout."""
    route = router.post("/search").mock(
        side_effect=[httpx.ReadTimeout("lost"), httpx.Response(200, json=[])]
    )
    make_transport(clock).request_json("POST", "/search", body={}, idempotent=True)
    assert route.call_count == 2


# -- ApiTransport: bodies that are not JSON ---------------------------------------------------


def test_html_200_retried_then_transient(router: respx.MockRouter, clock: FakeClock) -> None:
    """A 2xx HTML page on a GET is retried; if it persists, TransientApiError says so."""
    route = router.get("/invoices").respond(
        200, text="<html>proxy login</html>", headers={"Content-Type": "text/html"}
    )
    with pytest.raises(TransientApiError, match=r"response is not JSON \(text/html"):
        make_transport(clock).request_json("GET", "/invoices")
    assert route.call_count == FAST.max_attempts


def test_html_200_passes(router: respx.MockRouter, clock: FakeClock) -> None:
    """A passing proxy page is retried away."""
    router.get("/invoices").mock(
        side_effect=[
            httpx.Response(200, text="<html/>", headers={"Content-Type": "text/html"}),
            httpx.Response(200, json=[{"id": 1}]),
        ]
    )
    assert make_transport(clock).request_json("GET", "/invoices") == [{"id": 1}]


@pytest.mark.parametrize("text", ["<html>oops</html>", '{"id": 1, "total', ""])
def test_post_non_json_2xx_is_ambiguous(
    text: str, router: respx.MockRouter, clock: FakeClock
) -> None:
    """A POST whose 2xx body is not JSON (HTML, truncated, empty) may have been applied."""
    router.post("/invoices").respond(201, text=text)
    with pytest.raises(AmbiguousWriteError, match="not JSON"):
        make_transport(clock).request_json("POST", "/invoices", body={})


def test_request_without_json_ignores_body(router: respx.MockRouter, clock: FakeClock) -> None:
    """request() returns the response without decoding it."""
    router.put("/invoices/1/paid").respond(200, text="ok")
    assert make_transport(clock).request("PUT", "/invoices/1/paid").text == "ok"


# -- ApiTransport: permanent errors -----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (400, PermanentApiError),
        (401, AuthError),
        (403, AuthError),
        (404, NotFoundError),
        (409, PermanentApiError),
        (422, PermanentApiError),
    ],
)
def test_4xx_is_permanent(
    status: int, exc: type[Exception], router: respx.MockRouter, clock: FakeClock
) -> None:
    """Other 4xx are not retried and raise the permanent error for their status."""
    route = router.get("/invoices/1").respond(status, json={"message": "nope"})
    with pytest.raises(exc) as info:
        make_transport(clock).request_json("GET", "/invoices/1")
    assert type(info.value) is exc
    assert route.call_count == 1
    assert "nope" in str(info.value)


def test_error_message_is_short(router: respx.MockRouter, clock: FakeClock) -> None:
    """An error message quotes at most 200 characters of the body."""
    router.get("/invoices/1").respond(400, text="x" * 5000, headers={"Content-Type": "text/plain"})
    with pytest.raises(PermanentApiError) as info:
        make_transport(clock).request_json("GET", "/invoices/1")
    assert str(info.value).count("x") <= 200


def test_error_carries_request_id(router: respx.MockRouter, clock: FakeClock) -> None:
    """The x-request-id of a failed response is kept on the error."""
    router.get("/invoices/1").respond(400, json={"message": "bad"}, headers={"x-request-id": "r-1"})
    with pytest.raises(PermanentApiError) as info:
        make_transport(clock).request_json("GET", "/invoices/1")
    assert info.value.request_id == "r-1"
    assert info.value.path == "/invoices/{id}"
    assert info.value.method == "GET"


# -- ApiTransport: hosts and redirects --------------------------------------------------------


def test_get_url_same_host(router: respx.MockRouter, clock: FakeClock) -> None:
    """get_url fetches absolute URLs on the API's own host."""
    router.get("/invoices", params={"page": "2"}).respond(200, json=[])
    response = make_transport(clock).get_url(f"{BASE}/invoices?page=2")
    assert response.status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.test/v2/invoices?page=2",
        "http://api.example.test/v2/invoices?page=2",
        "https://api.example.test:8443/v2/invoices",
    ],
)
def test_get_url_other_host_refused(url: str, clock: FakeClock) -> None:
    """get_url refuses another host, scheme or port before sending anything."""
    transport = make_transport(clock)
    with pytest.raises(PermanentApiError, match="another host"):
        transport.get_url(url)
    assert transport.stats.requests == 0


def test_redirect_same_host_followed(router: respx.MockRouter, clock: FakeClock) -> None:
    """A redirect on the same host is followed, paced and counted."""
    router.get("/old").respond(301, headers={"Location": f"{BASE}/new"})
    router.get("/new").respond(200, json={"ok": True})
    transport = make_transport(clock)
    assert transport.request_json("GET", "/old") == {"ok": True}
    assert transport.stats.by_endpoint == {"GET /old": 1, "GET /new": 1}


def test_redirect_other_host_refused(router: respx.MockRouter, clock: FakeClock) -> None:
    """A redirect to another host is refused: the token never travels there."""
    router.get("/old").respond(302, headers={"Location": "https://evil.test/steal"})
    evil = respx.get("https://evil.test/steal").respond(200, json={})
    with pytest.raises(PermanentApiError, match="redirect to another host refused"):
        make_transport(clock).request_json("GET", "/old")
    assert not evil.called


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "HEAD"])
def test_redirect_repeats_the_request_verbatim(status: int, method: str, clock: FakeClock) -> None:
    """Noko's documents: a 301, 302 or 307 means "repeat the request verbatim" at the Location
    (308 says the same by its RFC). No PUT or POST turns into a GET; the body, its length and
    the headers go again, to the same origin."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/old":
            return httpx.Response(status, headers={"Location": f"{BASE}/new"})
        return httpx.Response(200, json={"ok": True})

    recorder = Recorder(handler)
    transport = recorded_transport(clock, recorder)
    body = {"reference": "KS-1"} if method in ("POST", "PUT") else None
    transport.request(method, "/old", body=body)
    first, second = recorder.requests
    assert second.method == method
    assert str(second.url) == f"{BASE}/new"
    assert second.headers["x-nokotoken"] == TOKEN
    assert second.extensions["timeout"] == first.extensions["timeout"]
    assert second.read() == first.read()
    assert second.headers.get("content-length") == first.headers.get("content-length")
    assert transport.stats.by_endpoint == {f"{method} /old": 1, f"{method} /new": 1}


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_redirect_303_followed_for_a_read(method: str, clock: FakeClock) -> None:
    """A 303 ("see other") is followed for a GET or HEAD, with the same method."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/old":
            return httpx.Response(303, headers={"Location": "/v2/new"})
        return httpx.Response(200, json={})

    recorder = Recorder(handler)
    recorded_transport(clock, recorder).request(method, "/old")
    assert [(r.method, r.url.path) for r in recorder.requests] == [
        (method, "/v2/old"),
        (method, "/v2/new"),
    ]


def test_redirect_303_never_turns_a_write_into_a_get(clock: FakeClock) -> None:
    """A 303 to a POST or PUT is not followed as a GET (that would report the write done):
    a POST is a write in doubt, a PUT a refusal; nothing more is sent."""
    recorder = Recorder(lambda request: httpx.Response(303, headers={"Location": "/v2/new"}))
    transport = recorded_transport(clock, recorder)
    with pytest.raises(AmbiguousWriteError, match="303 would turn the POST into a GET"):
        transport.request_json("POST", "/old", body={"a": 1})
    with pytest.raises(PermanentApiError, match="303 would turn the PUT into a GET"):
        transport.request_json("PUT", "/old", body={"a": 1})
    assert [r.method for r in recorder.requests] == ["POST", "PUT"]


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("new", f"{BASE}/dir/new"),
        ("../up", f"{BASE}/up"),
        ("/v2/abs?page=2", f"{BASE}/abs?page=2"),
        ("//api.example.test/v2/net", f"{BASE}/net"),
        ("https:///v2/nohost", f"{BASE}/nohost"),
    ],
)
def test_redirect_relative_location(location: str, expected: str, clock: FakeClock) -> None:
    """A relative Location is resolved against the URL of the request it answers."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/dir/old":
            return httpx.Response(302, headers={"Location": location})
        return httpx.Response(200, json={})

    recorder = Recorder(handler)
    recorded_transport(clock, recorder).request_json("GET", "/dir/old")
    assert [str(r.url) for r in recorder.requests] == [f"{BASE}/dir/old", expected]


@pytest.mark.parametrize(
    "location",
    [
        "https://evil.test/v2/steal",
        "http://api.example.test/v2/new",
        "https://api.example.test:8443/v2/new",
        "//evil.test/v2/steal",
    ],
)
def test_redirect_to_other_origin_not_sent(location: str, clock: FakeClock) -> None:
    """A redirect to another host, scheme or port is refused before anything is sent there."""
    recorder = Recorder(lambda request: httpx.Response(301, headers={"Location": location}))
    transport = recorded_transport(clock, recorder)
    with pytest.raises(PermanentApiError, match="redirect to another host refused"):
        transport.request_json("POST", "/old", body={"a": 1})
    assert len(recorder.requests) == 1
    assert transport.stats.requests == 1


def test_redirect_without_location_is_a_status(clock: FakeClock) -> None:
    """A 3xx without Location is an answer, not a redirect: an unexpected status."""
    recorder = Recorder(lambda request: httpx.Response(302))
    with pytest.raises(PermanentApiError) as info:
        recorded_transport(clock, recorder).request_json("GET", "/old")
    assert info.value.status == 302
    assert len(recorder.requests) == 1


def test_redirect_with_bad_location_is_a_protocol_error(clock: FakeClock) -> None:
    """An unparsable Location is the server's protocol error: retried like a dropped
    connection for a GET, ambiguous for a POST."""
    recorder = Recorder(
        lambda request: httpx.Response(302, headers={"Location": "https://h:port/"})
    )
    transport = recorded_transport(clock, recorder)
    with pytest.raises(TransientApiError, match="RemoteProtocolError: Invalid URL in location"):
        transport.request_json("GET", "/old")
    assert len(recorder.requests) == FAST.max_attempts
    with pytest.raises(AmbiguousWriteError):
        transport.request_json("POST", "/old", body={})


def test_redirect_loop_stops(clock: FakeClock) -> None:
    """A redirect loop is followed MAX_REDIRECTS times, then reported as a 3xx status."""
    recorder = Recorder(lambda request: httpx.Response(307, headers={"Location": "/v2/loop"}))
    transport = recorded_transport(clock, recorder)
    with pytest.raises(PermanentApiError) as info:
        transport.request_json("GET", "/loop")
    assert info.value.status == 307
    assert len(recorder.requests) == MAX_REDIRECTS + 1
    assert transport.stats.by_endpoint == {"GET /loop": MAX_REDIRECTS + 1}


def test_redirect_keeps_fragment(clock: FakeClock) -> None:
    """A fragment on the request URL is carried over when the Location has none (RFC 7231)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/old":
            return httpx.Response(308, headers={"Location": "/v2/new"})
        return httpx.Response(200, json={})

    recorder = Recorder(handler)
    recorded_transport(clock, recorder).get_url(f"{BASE}/old#part")
    assert recorder.requests[1].url.fragment == "part"


# -- ApiTransport: over real HTTP on loopback -------------------------------------------------


def _answer_unless_silent(head: bytes, body: bytes) -> bytes:
    """`/v2/silent` paths are read and never answered; the others get one JSON body."""
    if b" /v2/silent" in head.split(b"\r\n", 1)[0]:
        return b""
    return json_reply(b'{"total":1.10}')


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    server = LoopbackServer(_answer_unless_silent)
    yield server
    server.close()


def _loopback_transport(url: str, timeout: float) -> ApiTransport:
    return ApiTransport(
        "noko",
        url,
        {"X-NokoToken": TOKEN, "User-Agent": "test/1.0"},
        rate=None,
        burst=1,
        retry=RetryPolicy(max_attempts=1),
        timeout=timeout,
    )


def test_loopback_round_trip(loopback: LoopbackServer) -> None:
    """Without an injected transport the requests go over HTTP: request line, headers and
    body on the wire, the answer decoded, one kept-alive connection for all of them."""
    transport = _loopback_transport(loopback.url, 5.0)
    try:
        assert transport.request_json("GET", "/invoices/1", params={"a": "b c"}) == {
            "total": Decimal("1.10")
        }
        transport.request_json("POST", "/invoices", body={"n": Decimal("2.5")})
    finally:
        transport.close()
    (get_head, get_body), (post_head, post_body) = loopback.requests
    get_lines = get_head.split(b"\r\n")
    assert get_lines[0] == b"GET /v2/invoices/1?a=b+c HTTP/1.1"
    host = loopback.url.split("/")[2].encode()
    assert get_lines[1] == b"Host: " + host
    assert b"X-NokoToken: " + TOKEN.encode() in get_lines
    assert b"Connection: keep-alive" in get_lines
    assert get_body == b""
    post_lines = post_head.split(b"\r\n")
    assert post_lines[0] == b"POST /v2/invoices HTTP/1.1"
    assert b"Content-Type: application/json" in post_lines
    assert b"Content-Length: 9" in post_lines
    assert post_body == b'{"n":2.5}'
    assert len(loopback.connections) == 1


def test_loopback_timeout_applies(loopback: LoopbackServer) -> None:
    """The timeout bounds a request whose answer never comes: a read timeout, ambiguous for a
    POST, transient for a GET."""
    transport = _loopback_transport(loopback.url, 0.3)
    try:
        started = time.monotonic()
        with pytest.raises(TransientApiError, match="ReadTimeout"):
            transport.request_json("GET", "/silent")
        assert 0.25 < time.monotonic() - started < 5.0
        with pytest.raises(AmbiguousWriteError, match="ReadTimeout"):
            transport.request_json("POST", "/silent", body={})
    finally:
        transport.close()


# -- ApiTransport: secrets and logs -----------------------------------------------------------


def test_token_never_in_errors_repr_or_logs(router: respx.MockRouter, clock: FakeClock) -> None:
    """The token appears in no exception, repr or log line, even if a body echoes it."""
    router.get("/a").respond(500, text=f"upstream said token={TOKEN}")
    router.get("/b").respond(401, json={"message": f"bad token {TOKEN}"})
    router.get("/c").mock(side_effect=httpx.ConnectError(f"cannot reach {TOKEN}"))
    transport = make_transport(clock)
    messages: list[str] = []
    with capture_logs() as logs:
        for path in ("/a", "/b", "/c"):
            with pytest.raises(ApiError) as info:
                transport.request_json("GET", path)
            messages.append(str(info.value) + repr(info.value))
    assert all(TOKEN not in m for m in messages)
    assert "[redacted]" in messages[1]
    assert TOKEN not in repr(transport)
    assert logs
    assert TOKEN not in json.dumps(logs, default=str)


def test_retry_logged_once_per_retry(router: respx.MockRouter, clock: FakeClock) -> None:
    """Each retry is one log line naming service, method, path template, status and delay."""
    router.get("/invoices/12").mock(
        side_effect=[
            httpx.Response(429, headers={"x-request-id": "abc"}),
            httpx.Response(200, json={}),
        ]
    )
    with capture_logs() as logs:
        make_transport(clock).request_json("GET", "/invoices/12")
    retries = [entry for entry in logs if entry["event"] == "http_retry"]
    assert len(retries) == 1
    entry = retries[0]
    assert entry["service"] == "noko"
    assert entry["method"] == "GET"
    assert entry["path"] == "GET /invoices/{id}"
    assert entry["status"] == 429
    assert entry["attempt"] == 1
    assert entry["delay"] == 0.25
    assert entry["request_id"] == "abc"


def test_stats_count_everything(router: respx.MockRouter, clock: FakeClock) -> None:
    """Stats count attempts, failed attempts, 429s, retries and attempts per endpoint."""
    router.get("/invoices/1").mock(side_effect=[httpx.Response(429), httpx.Response(200, json={})])
    router.get("/invoices/2").respond(404)
    transport = make_transport(clock)
    transport.request_json("GET", "/invoices/1")
    with pytest.raises(NotFoundError):
        transport.request_json("GET", "/invoices/2")
    snap = transport.stats.snapshot()
    assert snap["requests"] == 3
    assert snap["errors"] == 2
    assert snap["status_429"] == 1
    assert snap["retries"] == 1
    assert snap["by_endpoint"] == {"GET /invoices/{id}": 3}


def test_none_params_dropped(router: respx.MockRouter, clock: FakeClock) -> None:
    """Query parameters whose value is None are left out, not sent empty."""
    route = router.get("/invoices").respond(200, json=[])
    make_transport(clock).request_json("GET", "/invoices", params={"a": None, "b": 1})
    assert str(route.calls.last.request.url.query, "ascii") == "b=1"


def test_query_written_as_httpx_writes_params(router: respx.MockRouter, clock: FakeClock) -> None:
    """The query the transport builds itself is the one httpx would build from `params`."""
    params: dict[str, Any] = {
        "include": "time_entries,expenses",
        "updated_after": "2024-03-01T10:00:00Z",
        "per_page": 200,
        "invoiced": False,
        "billable": True,
        "description": "[KS-12/ Ünïcode & more",
        "ids": [1, 2],
    }
    expected = httpx.Request("GET", BASE + "/invoices", params=params).url
    route = router.get("/invoices").respond(200, json=[])
    transport = make_transport(clock)
    transport.request_json("GET", "/invoices", params=params)
    assert route.calls.last.request.url == expected
    del params["ids"]  # without a list value the transport writes the query itself
    transport.request_json("GET", "/invoices", params=params)
    assert (
        route.calls.last.request.url == httpx.Request("GET", BASE + "/invoices", params=params).url
    )


def test_decode_json_like_json_loads() -> None:
    """Bytes in any JSON encoding, str, and a BOM refused as `json.loads` refuses it."""
    assert decode_json('{"a": 1.10}'.encode("utf-16")) == {"a": Decimal("1.10")}
    assert decode_json('{"a": [1, "x"]}') == {"a": [1, "x"]}
    with pytest.raises(ValueError, match="BOM"):
        decode_json('\ufeff{"a": 1}')


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"initial_delay": -1.0}, {"max_total": -5.0}]
)
def test_retry_policy_validated(kwargs: dict[str, Any]) -> None:
    """A retry policy that cannot work is refused when built."""
    with pytest.raises(ValueError, match=r"max_attempts|negative"):
        RetryPolicy(**kwargs)


def test_base_url_must_be_absolute() -> None:
    """A base URL without scheme and host is refused at construction."""
    with pytest.raises(ValueError, match="absolute"):
        ApiTransport("noko", "api/v2", {}, rate=None, burst=1, retry=FAST, timeout=1.0)


class _ChunkedStream(httpx.SyncByteStream):
    """A body arriving in several chunks; remembers whether it was closed."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks

    def close(self) -> None:
        self.closed = True


def test_a_body_in_chunks_is_read_whole_and_its_stream_closed(clock: FakeClock) -> None:
    stream = _ChunkedStream([b'{"total": ', b'"12.5', b'0", "n": 1.25}'])
    recorder = Recorder(lambda request: httpx.Response(200, stream=stream))
    api = recorded_transport(clock, recorder)
    response, decoded = api.request_json_response("GET", "/invoices/1")
    assert decoded == {"total": "12.50", "n": Decimal("1.25")}
    assert response.content == b'{"total": "12.50", "n": 1.25}'
    assert stream.closed and response.is_closed


def test_a_gzip_encoded_body_is_decoded(clock: FakeClock) -> None:
    import gzip

    body = gzip.compress(b'{"id": 7, "total": 3.10}')
    recorder = Recorder(
        lambda request: httpx.Response(
            200, headers={"Content-Encoding": "gzip"}, stream=_ChunkedStream([body])
        )
    )
    api = recorded_transport(clock, recorder)
    assert api.request_json("GET", "/invoices/7") == {"id": 7, "total": Decimal("3.10")}


def test_cookies_set_by_the_api_are_never_sent_back(clock: FakeClock) -> None:
    """An API client keeps no session: a `Set-Cookie` in one answer is not sent with the next
    request (it would be state outside the state file, and a way to track the connector)."""
    recorder = Recorder(
        lambda request: httpx.Response(
            200, json={"ok": True}, headers={"Set-Cookie": "session=abc123; Path=/"}
        )
    )
    transport = recorded_transport(clock, recorder)
    transport.request_json("GET", "/first")
    transport.request_json("GET", "/second")
    assert len(recorder.requests) == 2
    assert "cookie" not in recorder.requests[1].headers
