"""Client-side CPU per request of `connector.http.ApiTransport`.

`python -m bench.http_client [--requests N] [--repeats R]` sends the same three requests the
connector sends most (a GET with a query, a POST with a JSON body of `Decimal` amounts, a PUT
without a body) through one `ApiTransport`, first against an in-process `httpx.MockTransport`,
then over real HTTP/1.1 on loopback to a minimal keep-alive server in a child process (so the
server's CPU is not counted). It prints the median over the repeats of process CPU time
(`time.process_time`, user + system) per request, in microseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import multiprocessing
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx

from connector.http import ApiTransport, RetryPolicy
from tests.loopback import read_requests

__all__ = ["cpu_per_call", "loopback_server", "main"]

TOKEN = "bench-token-0123456789"  # noqa: S105 - a fixed token for a local server
GET_BODY = (
    b'{"id":12,"reference":"KS-12","state":"unpaid","total":"1234.50","currency":"USD",'
    b'"project":{"id":7,"name":"Website"},"entries":[{"id":1,"minutes":90,"rate":"120.00"},'
    b'{"id":2,"minutes":30,"rate":"95.00"}],"updated_at":"2024-03-01T10:00:00Z"}'
)
POST_BODY = b'{"id":4411,"reference":"KS-12","state":"unpaid"}'
INVOICE: dict[str, Any] = {
    "invoice": {
        "reference": "KS-12",
        "invoice_date": "2024-03-01",
        "project_name": "Website",
        "description": "March work",
        "line_items": [
            {"description": f"Item {i}", "quantity": i + 1, "amount": Decimal(f"{i}12.50")}
            for i in range(8)
        ],
        "tags": ["kantata", "sync"],
        "total": Decimal("4812.00"),
    }
}


def _case_get(api: ApiTransport) -> None:
    api.request_json_response(
        "GET", "/invoices/12.json", params={"include": "entries,project", "per_page": 200}
    )


def _case_post(api: ApiTransport) -> None:
    api.request_json("POST", "/invoices", body=INVOICE)


def _case_put(api: ApiTransport) -> None:
    api.request("PUT", "/invoices/12/paid")


CASES: dict[str, Callable[[ApiTransport], None]] = {
    "GET+query": _case_get,
    "POST body": _case_post,
    "PUT empty": _case_put,
}


def _mock_handler(request: httpx.Request) -> httpx.Response:
    headers = [
        (b"Content-Type", b"application/json; charset=utf-8"),
        (b"X-Request-Id", b"req-1"),
    ]
    if request.method == "POST":
        return httpx.Response(201, headers=headers, content=POST_BODY)
    if request.method == "PUT":
        return httpx.Response(200, headers=headers, content=b"")
    return httpx.Response(200, headers=headers, content=GET_BODY)


# -- a minimal keep-alive HTTP/1.1 server, in a child process ---------------------------------


def _reply(method: bytes) -> bytes:
    if method == b"POST":
        status, body = b"201 Created", POST_BODY
    elif method == b"PUT":
        status, body = b"200 OK", b""
    else:
        status, body = b"200 OK", GET_BODY
    head = (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Date: Fri, 01 Mar 2024 10:00:00 GMT\r\n"
        b"Server: bench\r\n"
        b"Content-Type: application/json; charset=utf-8\r\n"
        b"X-Request-Id: req-1\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


def _serve_connection(connection: socket.socket) -> None:
    with connection:
        for head, _ in read_requests(connection):
            connection.sendall(_reply(head.split(b" ", 1)[0]))


def _server(listener: socket.socket) -> None:
    import threading

    while True:
        connection, _ = listener.accept()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve_connection, args=(connection,), daemon=True).start()


# -- measuring --------------------------------------------------------------------------------


def _make(base_url: str, transport: httpx.BaseTransport | None) -> ApiTransport:
    return ApiTransport(
        "noko",
        base_url,
        {"X-NokoToken": TOKEN, "User-Agent": "kantata-sync/bench", "Accept": "application/json"},
        rate=None,
        burst=1,
        retry=RetryPolicy(max_attempts=1),
        timeout=10.0,
        transport=transport,
    )


def cpu_per_call(call: Callable[[], object], n: int, repeats: int) -> float:
    """The median over `repeats` runs of `n` calls of process CPU time per call, in us, after
    a warm-up (connection, caches)."""
    for _ in range(min(n, 200)):
        call()
    samples: list[float] = []
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(n):
            call()
        samples.append((time.process_time() - start) / n * 1e6)
    return statistics.median(samples)


@contextlib.contextmanager
def loopback_server() -> Iterator[int]:
    """The minimal keep-alive server in a child process (its CPU not counted); yields its port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    server = multiprocessing.get_context("fork").Process(target=_server, args=(listener,))
    server.daemon = True
    server.start()
    listener.close()
    try:
        yield port
    finally:
        server.terminate()
        server.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    with loopback_server() as port:
        setups: list[tuple[str, Callable[[], ApiTransport]]] = [
            (
                "MockTransport",
                lambda: _make("https://api.example.test/v2", httpx.MockTransport(_mock_handler)),
            ),
            ("loopback HTTP", lambda: _make(f"http://127.0.0.1:{port}/v2", None)),
        ]
        print(f"CPU us per request, median of {args.repeats} x {args.requests} requests")
        print(f"{'':16}" + "".join(f"{name:>12}" for name in CASES))
        for label, factory in setups:
            api = factory()
            try:
                row = [
                    cpu_per_call(functools.partial(case, api), args.requests, args.repeats)
                    for case in CASES.values()
                ]
            finally:
                api.close()
            print(f"{label:16}" + "".join(f"{value:12.1f}" for value in row))


if __name__ == "__main__":
    main()
