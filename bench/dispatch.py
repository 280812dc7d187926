"""A transport without the HTTP stack: requests go straight to the fakes' `Service.handle`.

The fakes live in the benchmark's own process and the connector in a child process, so that
the child's CPU time and peak RSS are the connector's alone. Between them there are no HTTP
messages and no parsing: each request is one `marshal`-ed tuple (service, method, target,
headers, body) over a Unix socket, one socket per connector thread, and the answer is the
fake's `Response` as a tuple. Each transport adds up the CPU time its callers spent in that
hand-off (`cpu`, from the threads' own CPU clocks), so the benchmark can show the connector's
CPU without it. This is the same hand-off `sandbox/server.py` makes after it has
parsed a request, minus the parsing.
"""

from __future__ import annotations

import contextlib
import marshal
import socket
import struct
import threading
import time
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx

from sandbox._core import Request, Service

__all__ = ["DispatchServer", "DispatchTransport"]

_LENGTH = struct.Struct("!I")


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise ConnectionError("dispatch peer closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> bytes:
    """One frame; a reply is one `recv` when it fits (the peer sends nothing after it)."""
    data = sock.recv(1 << 16)
    if len(data) < _LENGTH.size:
        if not data:
            raise ConnectionError("dispatch peer closed the connection")
        data += _recv_exact(sock, _LENGTH.size - len(data))
    (size,) = _LENGTH.unpack_from(data)
    missing = size + _LENGTH.size - len(data)
    if missing > 0:
        data += _recv_exact(sock, missing)
    return data[_LENGTH.size :]


class DispatchServer:
    """Serves the fakes to `DispatchTransport`s in other processes (a thread per connection)."""

    def __init__(self, path: str, services: Mapping[str, Service]) -> None:
        self.path = path
        self.services = dict(services)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(64)
        self._threads: list[threading.Thread] = []
        self._connections: list[socket.socket] = []
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, name="dispatch", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._connections.append(connection)
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            while True:
                try:
                    frame = _recv(connection)
                except (ConnectionError, OSError):
                    return
                frame_in = marshal.loads(frame)  # noqa: S302 - from our own child process
                _send(connection, marshal.dumps(self._answer(frame_in)))

    def _answer(self, frame: tuple[Any, ...]) -> tuple[Any, ...]:
        name, method, target, raw_headers, body = frame
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}
        service = self.services[name]
        path, _, raw_query = target.partition("?")
        query: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            query.setdefault(key, value)
        request = Request(
            method=method,
            path=unquote(path) or "/",
            query=query,
            headers=headers,
            body=body,
            client="127.0.0.1",
            raw_query=raw_query,
        )
        try:
            response = service.handle(request)
        except Exception as exc:  # noqa: BLE001 - as server.py: a fake's bug answers 500
            response = service.error(500, f"sandbox error: {type(exc).__name__}: {exc}")
        out = list(response.headers)
        out.append(("Date", formatdate(int(service.clock.now().timestamp()), usegmt=True)))
        if response.content_type and (response.body or response.status != 204):
            out.append(("Content-Type", response.content_type))
        # As bytes, the form a wire parser hands httpx: the connector's side does not encode.
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out]
        return response.status, raw, response.body, response.drop

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class DispatchTransport(httpx.BaseTransport):
    """An httpx transport handing each request to one fake of a `DispatchServer`."""

    def __init__(self, path: str, service: str) -> None:
        self.path = path
        self.service = service
        self.cpu = 0.0
        """CPU seconds the hand-off itself took in the calling threads (encoding, the socket
        round trip, decoding): what the benchmark takes off the connector's own CPU."""
        self._local = threading.local()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def _socket(self) -> socket.socket:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.path)
            self._local.sock = sock
            with self._lock:
                self._sockets.append(sock)
        return sock

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started = time.thread_time()
        target = request.url.raw_path.decode("ascii")
        sock = self._socket()
        frame = (self.service, request.method, target, request.headers.raw, request.read())
        _send(sock, marshal.dumps(frame))
        status, out, body, drop = marshal.loads(_recv(sock))  # noqa: S302 - our own server
        spent = time.thread_time() - started
        with self._lock:
            self.cpu += spent
        if drop:
            raise httpx.RemoteProtocolError("connection dropped by the fake", request=request)
        # As httpx's own HTTP transport does: a stream, no header rewriting.
        return httpx.Response(status, headers=out, stream=httpx.ByteStream(body), request=request)

    def close(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
