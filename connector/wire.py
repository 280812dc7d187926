"""HTTP/1.1 on plain sockets with httptools' parser (llhttp, in C), as an httpx transport.

`ApiTransport` sends every request of the connector through one httpx transport. httpx's own
(httpcore and h11, pure Python) costs several times the client CPU per request of a socket
exchange parsed in C, and at ten requests per invoice that is most of the connector's CPU over
HTTP. This transport keeps httpx's request and response objects, its exceptions and therefore
everything `ApiTransport` decides from them, and puts sockets and httptools underneath:

- one origin (the API's base URL), kept-alive connections reused last-in first-out, at most
  `max_idle` kept idle, none older than `keepalive_expiry` seconds;
- a kept connection is reused only if the server has not closed it meanwhile (a readable idle
  socket means end of file or junk: it is dropped and a new one opened before anything is sent);
- a request is sent once: nothing here repeats it;
- errors are httpx's, by the moment they happen: before anything was sent `ConnectError` or
  `ConnectTimeout` (safe to repeat), while sending `WriteError` or `WriteTimeout`, while
  waiting for or reading the answer `ReadTimeout`, `RemoteProtocolError` or `ReadError` (the
  request may have been applied);
- the response is read whole (Content-Length, chunked, or until the server closes); a
  connection is kept only when the server allows it and sent nothing past the response;
- TLS with httpx's own default context (certifi, `SSL_CERT_FILE`), so verification is the same.

Content-Encoding is not undone here; httpx's `Response.read` does it, as with httpcore.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import httptools
import httpx

__all__ = ["WireTransport"]

_SocketTimeout = (TimeoutError, socket.timeout)
_RECV = 1 << 16


class _Body(httpx.SyncByteStream):
    """The whole body, read before the response is handed back."""

    __slots__ = ("content",)

    def __init__(self, content: bytes) -> None:
        self.content = content

    def __iter__(self) -> Iterator[bytes]:
        yield self.content


class _Answer:
    """httptools' callbacks for one response: status, headers in order, body."""

    __slots__ = ("body", "complete", "headers", "headers_done", "keep_alive", "parser", "reason")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self.reason, self.headers, self.body, self.headers_done = b"", [], [], False
            return
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True

    def delimited_by_close(self) -> bool:
        """Whether the body runs until the server closes (no length, not chunked)."""
        for name, _ in self.headers:
            if name.lower() in (b"content-length", b"transfer-encoding"):
                return False
        return True


class _Connection:
    __slots__ = ("since", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.since = 0.0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class WireTransport(httpx.BaseTransport):
    """An httpx transport for one origin over kept-alive sockets (see the module)."""

    def __init__(
        self,
        url: httpx.URL,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 20,
        keepalive_expiry: float = 5.0,
    ) -> None:
        if url.scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {url.scheme!r}")
        self.scheme = url.scheme
        self.host = url.host
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl_context
        if url.scheme == "https" and self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- connections --------------------------------------------------------------------------

    def _connect(self, timeout: float | None) -> _Connection:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except _SocketTimeout as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
        except OSError as exc:  # refused, unreachable, name not found
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
        except _SocketTimeout as exc:
            sock.close()
            raise httpx.ConnectTimeout(str(exc) or "TLS handshake timed out") from exc
        except OSError as exc:  # the TLS handshake or certificate check failed
            sock.close()
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Connection(sock)

    def _take(self) -> _Connection | None:
        """A kept connection still usable, or None."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    return None
                connection = self._idle.pop()
            if now - connection.since <= self.keepalive_expiry and _still_open(connection.sock):
                return connection
            connection.close()

    def _keep(self, connection: _Connection) -> None:
        connection.since = time.monotonic()
        with self._lock:
            if not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # -- one exchange -------------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        timeouts = request.extensions.get("timeout", {})
        message = _message(request)
        connection = self._take() or self._connect(timeouts.get("connect"))
        sock = connection.sock
        try:
            sock.settimeout(timeouts.get("write"))
            sock.sendall(message)
        except _SocketTimeout as exc:
            connection.close()
            raise httpx.WriteTimeout(str(exc) or "write timed out") from exc
        except OSError as exc:
            connection.close()
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        answer = _Answer()
        reusable = True
        try:
            sock.settimeout(timeouts.get("read"))
            received = 0
            while not answer.complete:
                data = sock.recv(_RECV)
                if not data:
                    if answer.headers_done and answer.delimited_by_close():
                        answer.complete = True
                        reusable = False
                        break
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response."
                        if not received
                        else "Server disconnected before the response was complete."
                    )
                received += len(data)
                try:
                    answer.parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    if not answer.complete:
                        raise httpx.RemoteProtocolError(f"malformed response: {exc}") from exc
                    reusable = False  # bytes past the response: not a connection to reuse
                if request.method == "HEAD" and answer.headers_done:
                    answer.complete = True
                    answer.keep_alive = answer.parser.should_keep_alive()
        except _SocketTimeout as exc:
            connection.close()
            raise httpx.ReadTimeout(str(exc) or "read timed out") from exc
        except httpx.RemoteProtocolError:
            connection.close()
            raise
        except OSError as exc:
            connection.close()
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        if reusable and answer.keep_alive:
            self._keep(connection)
        else:
            connection.close()
        parser = answer.parser
        return httpx.Response(
            parser.get_status_code(),
            headers=answer.headers,
            stream=_Body(b"".join(answer.body)),
            extensions={
                "http_version": b"HTTP/" + parser.get_http_version().encode("ascii"),
                "reason_phrase": answer.reason,
            },
        )


def _message(request: httpx.Request) -> bytes:
    """The request as it goes on the wire: request line, headers in order, body."""
    target = request.url.raw_path
    lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    for name, value in request.headers.raw:
        if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name or b":" in name:
            raise httpx.LocalProtocolError(f"illegal header {name!r}")
        lines.append(name + b": " + value)
    lines.append(b"\r\n")
    return b"\r\n".join(lines) + request.read()


def _still_open(sock: socket.socket) -> bool:
    """An idle kept-alive socket has nothing to read: readable means closed (or junk)."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False
