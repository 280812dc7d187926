"""Client CPU per request of the HTTP/1.1 stacks a connector could sit on, on loopback.

`python -m bench.http_stacks [--requests N] [--repeats R]` sends a GET and a POST through each
stack that is importable here (httpcore, as httpx uses it; urllib3; the standard library's
`http.client`; pycurl), one keep-alive connection each, to the minimal server of
`bench.http_client` in a child process, and prints the median process CPU time per request in
microseconds. Stacks that are not installed are named and skipped. It measures the wire layer
alone: `bench.http_client` measures the connector's own `ApiTransport` on top of httpx.
"""

from __future__ import annotations

import argparse
import importlib
import io
from collections.abc import Callable
from typing import Any

from bench.http_client import cpu_per_call, loopback_server

__all__ = ["main"]

HEADERS = {"X-NokoToken": "bench-token", "Accept": "application/json"}
POST_HEADERS = {**HEADERS, "Content-Type": "application/json"}
GET_PATH = "/v2/invoices/12.json?include=entries,project"
POST_PATH = "/v2/invoices"
BODY = b'{"invoice":{"reference":"KS-12","line_items":[{"amount":12.50},{"amount":3}]}}' * 4


def _httpcore(base: str, port: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
    httpcore: Any = importlib.import_module("httpcore")
    pool = httpcore.ConnectionPool()
    return (
        lambda: pool.request("GET", base + GET_PATH, headers=HEADERS),
        lambda: pool.request("POST", base + POST_PATH, headers=POST_HEADERS, content=BODY),
    )


def _urllib3(base: str, port: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
    urllib3: Any = importlib.import_module("urllib3")
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1)
    return (
        lambda: pool.request("GET", GET_PATH, headers=HEADERS).data,
        lambda: pool.request("POST", POST_PATH, body=BODY, headers=POST_HEADERS).data,
    )


def _http_client(base: str, port: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port)

    def call(method: str, path: str, body: bytes | None, headers: dict[str, str]) -> bytes:
        connection.request(method, path, body=body, headers=headers)
        return connection.getresponse().read()

    return (
        lambda: call("GET", GET_PATH, None, HEADERS),
        lambda: call("POST", POST_PATH, BODY, POST_HEADERS),
    )


def _pycurl(base: str, port: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
    pycurl: Any = importlib.import_module("pycurl")
    curl = pycurl.Curl()

    def call(path: str, body: bytes | None, headers: dict[str, str]) -> bytes:
        buffer = io.BytesIO()
        received: list[bytes] = []
        curl.setopt(pycurl.URL, base + path)
        curl.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in headers.items()])
        curl.setopt(pycurl.WRITEDATA, buffer)
        curl.setopt(pycurl.HEADERFUNCTION, received.append)
        if body is None:
            curl.setopt(pycurl.HTTPGET, 1)
        else:
            curl.setopt(pycurl.POSTFIELDS, body)
        curl.perform()
        return buffer.getvalue()

    return (
        lambda: call(GET_PATH, None, HEADERS),
        lambda: call(POST_PATH, BODY, POST_HEADERS),
    )


STACKS: dict[str, Callable[[str, int], tuple[Callable[[], Any], Callable[[], Any]]]] = {
    "httpcore (httpx)": _httpcore,
    "urllib3": _urllib3,
    "http.client": _http_client,
    "pycurl": _pycurl,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    with loopback_server() as port:
        base = f"http://127.0.0.1:{port}"
        print(f"CPU us per request on loopback, median of {args.repeats} x {args.requests}")
        print(f"{'':18}{'GET':>10}{'POST':>10}")
        for name, make in STACKS.items():
            try:
                get, post = make(base, port)
            except ImportError:
                print(f"{name:18}{'not installed':>20}")
                continue
            row = [cpu_per_call(call, args.requests, args.repeats) for call in (get, post)]
            print(f"{name:18}" + "".join(f"{value:10.1f}" for value in row))


if __name__ == "__main__":
    main()
