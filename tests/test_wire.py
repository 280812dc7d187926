"""`connector.wire.WireTransport`: HTTP/1.1 on sockets with httptools, against a loopback server
that answers each request as a test script says (answer, close, stay silent, chunk, gzip)."""

from __future__ import annotations

import gzip
import socket
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import pytest

from connector.errors import AmbiguousWriteError, TransientApiError
from connector.http import ApiTransport, RetryPolicy
from connector.wire import WireTransport
from tests.loopback import Last, LoopbackServer, Reply, json_reply


@pytest.fixture
def serve() -> Iterator[Callable[..., LoopbackServer]]:
    servers: list[LoopbackServer] = []

    def start(*replies: Reply) -> LoopbackServer:
        server = LoopbackServer(*replies)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _api(url: str, *, timeout: float = 5.0, attempts: int = 3) -> ApiTransport:
    return ApiTransport(
        "noko",
        url,
        {"X-NokoToken": "secret-token", "User-Agent": "test/1.0"},
        rate=None,
        burst=1,
        retry=RetryPolicy(max_attempts=attempts, initial_delay=0.0, max_delay=0.0),
        timeout=timeout,
        sleep=lambda _: None,
    )


def test_the_default_transport_is_the_wire_transport(serve: Callable[..., LoopbackServer]) -> None:
    server = serve(lambda head, body: json_reply(b'{"ok":true}'))
    api = _api(server.url)
    try:
        assert isinstance(api._transport, WireTransport)
        assert api.request_json("GET", "/ping") == {"ok": True}
    finally:
        api.close()


def test_requests_share_one_kept_alive_connection(serve: Callable[..., LoopbackServer]) -> None:
    server = serve(lambda head, body: json_reply(b'{"n":1.5}'))
    api = _api(server.url)
    try:
        for _ in range(5):
            assert api.request_json("POST", "/expenses", body={"a": 1}) == {"n": Decimal("1.5")}
    finally:
        api.close()
    assert len(server.requests) == 5
    assert len(server.connections) == 1
    head, body = server.requests[0]
    assert head.split(b"\r\n", 1)[0] == b"POST /v2/expenses HTTP/1.1"
    assert b"Content-Length: 7" in head.split(b"\r\n")
    assert body == b'{"a":1}'


def test_a_connection_the_server_closed_while_idle_is_not_used(
    serve: Callable[..., LoopbackServer],
) -> None:
    """The server answers and then closes; the next POST goes out on a new connection, sent
    once, with no error: the dead one is noticed before anything is written to it."""

    def answer_then_close(head: bytes, body: bytes) -> bytes:
        return json_reply(b'{"id":1}')  # no Connection: close, then the socket is shut below

    server = serve(answer_then_close)
    api = _api(server.url)
    try:
        api.request_json("POST", "/expenses", body={"a": 1})
        for connection in list(server.connections):
            connection.shutdown(socket.SHUT_RDWR)
        assert api.request_json("POST", "/expenses", body={"a": 2}) == {"id": 1}
    finally:
        api.close()
    assert [body for _, body in server.requests] == [b'{"a":1}', b'{"a":2}']
    assert len(server.connections) == 2


def test_connection_close_from_the_server_is_honoured(serve: Callable[..., LoopbackServer]) -> None:
    server = serve(lambda head, body: json_reply(b"{}", extra=b"Connection: close\r\n"))
    api = _api(server.url)
    try:
        api.request_json("GET", "/a")
        api.request_json("GET", "/b")
    finally:
        api.close()
    assert len(server.connections) == 2


def test_a_post_without_an_answer_is_ambiguous_and_sent_once(
    serve: Callable[..., LoopbackServer],
) -> None:
    server = serve(lambda head, body: None)  # read the request, close without a word
    api = _api(server.url)
    try:
        with pytest.raises(AmbiguousWriteError, match="may have been applied"):
            api.request_json("POST", "/expenses", body={"a": 1})
    finally:
        api.close()
    assert len(server.requests) == 1


def test_a_get_without_an_answer_is_retried(serve: Callable[..., LoopbackServer]) -> None:
    server = serve(lambda head, body: None, lambda head, body: json_reply(b'{"ok":1}'))
    api = _api(server.url)
    try:
        assert api.request_json("GET", "/invoices") == {"ok": 1}
    finally:
        api.close()
    assert len(server.requests) == 2


def test_a_read_timeout_on_a_post_is_ambiguous(serve: Callable[..., LoopbackServer]) -> None:
    server = serve(lambda head, body: b"")  # read, never answer
    api = _api(server.url, timeout=0.2)
    try:
        with pytest.raises(AmbiguousWriteError, match="ReadTimeout"):
            api.request_json("POST", "/expenses", body={"a": 1})
    finally:
        api.close()
    assert len(server.requests) == 1


def test_a_refused_connection_is_safe_to_repeat_even_for_a_post() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    api = _api(f"http://127.0.0.1:{port}/v2", attempts=2)
    try:
        with pytest.raises(TransientApiError, match="ConnectError") as caught:
            api.request_json("POST", "/expenses", body={"a": 1})
    finally:
        api.close()
    assert not isinstance(caught.value, AmbiguousWriteError)
    assert api.stats.snapshot()["requests"] == 2


def test_a_body_cut_short_is_a_protocol_error(serve: Callable[..., LoopbackServer]) -> None:
    cut = Last(b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"id":')
    server = serve(lambda head, body: cut)
    api = _api(server.url, attempts=1)
    try:
        with pytest.raises(AmbiguousWriteError, match="RemoteProtocolError"):
            api.request_json("POST", "/expenses", body={"a": 1})
    finally:
        api.close()
    assert len(server.requests) == 1


def test_chunked_and_gzip_bodies_are_read(serve: Callable[..., LoopbackServer]) -> None:
    zipped = gzip.compress(b'{"total": 3.10}')
    chunked = (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n'
    )
    server = serve(
        lambda head, body: chunked,
        lambda head, body: json_reply(zipped, extra=b"Content-Encoding: gzip\r\n"),
    )
    api = _api(server.url)
    try:
        assert api.request_json("GET", "/one") == {"a": 1}
        assert api.request_json("GET", "/two") == {"total": Decimal("3.10")}
    finally:
        api.close()
    assert len(server.connections) == 1


def test_response_headers_keep_their_order_and_repeats(
    serve: Callable[..., LoopbackServer],
) -> None:
    server = serve(
        lambda head, body: (
            b'HTTP/1.1 200 OK\r\nLink: <a>; rel="next"\r\nX-Request-Id: r1\r\n'
            b'Link: <b>; rel="last"\r\nContent-Length: 2\r\n\r\n{}'
        )
    )
    api = _api(server.url)
    try:
        response = api.request("GET", "/invoices")
    finally:
        api.close()
    assert response.headers.get_list("link") == ['<a>; rel="next"', '<b>; rel="last"']
    assert response.headers["x-request-id"] == "r1"
    assert response.reason_phrase == "OK"
    assert response.http_version == "HTTP/1.1"


def test_a_closed_transport_refuses_requests() -> None:
    transport = WireTransport(httpx.URL("http://127.0.0.1:9/"))
    transport.close()
    with pytest.raises(RuntimeError, match="closed"):
        transport.handle_request(httpx.Request("GET", "http://127.0.0.1:9/"))


def test_a_proxy_named_by_the_environment_keeps_httpx_s_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    api = _api("https://api.example.test/v2")
    try:
        assert not isinstance(api._transport, WireTransport)
        assert api._own_transport is None
    finally:
        api.close()
    monkeypatch.delenv("HTTPS_PROXY")
    plain = _api("https://api.example.test/v2")
    try:
        assert isinstance(plain._transport, WireTransport)
    finally:
        plain.close()


def test_a_body_that_runs_until_the_server_closes_is_read_whole(
    serve: Callable[..., LoopbackServer],
) -> None:
    server = serve(lambda head, body: Last(b'HTTP/1.0 200 OK\r\n\r\n{"whole": true}'))
    api = _api(server.url)
    try:
        assert api.request_json("GET", "/old") == {"whole": True}
        assert api.request_json("GET", "/old") == {"whole": True}
    finally:
        api.close()
    assert len(server.connections) == 2  # never reused: its end was the connection's end


def test_an_interim_answer_is_passed_over(serve: Callable[..., LoopbackServer]) -> None:
    server = serve(lambda head, body: b"HTTP/1.1 100 Continue\r\n\r\n" + json_reply(b'{"id":3}'))
    api = _api(server.url)
    try:
        response, decoded = api.request_json_response("POST", "/expenses", body={"a": 1})
    finally:
        api.close()
    assert (response.status_code, decoded) == (200, {"id": 3})


def test_a_header_value_with_a_line_break_is_never_sent(
    serve: Callable[..., LoopbackServer],
) -> None:
    server = serve(lambda head, body: json_reply(b"{}"))
    transport = WireTransport(httpx.URL(server.url))
    request = httpx.Request("GET", server.url + "/x", headers={"X-Evil": "a\r\nInjected: 1"})
    try:
        with pytest.raises((httpx.LocalProtocolError, httpx.InvalidURL, ValueError)):
            transport.handle_request(request)
    finally:
        transport.close()
    assert server.requests == []


def test_garbage_instead_of_an_answer_is_a_protocol_error(
    serve: Callable[..., LoopbackServer],
) -> None:
    server = serve(lambda head, body: b"SSH-2.0-OpenSSH\r\n\r\n")
    api = _api(server.url, attempts=1)
    try:
        with pytest.raises(AmbiguousWriteError, match="malformed response"):
            api.request_json("POST", "/expenses", body={"a": 1})
    finally:
        api.close()
