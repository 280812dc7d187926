"""HTTP/1.1 on the standard library's `http.client`, as an httpx transport.

`ApiTransport` sends every request of the connector through one httpx transport. httpx's own
(httpcore and h11, pure Python) costs about twice the client CPU per request of `http.client`,
whose status line and header parsing is leaner, and at ten requests per invoice that is most of
the connector's CPU over HTTP. This transport keeps httpx's request and response objects, its
exceptions and therefore everything `ApiTransport` decides from them, and puts `http.client`
underneath:

- one origin (the API's base URL), kept-alive connections reused last-in first-out, at most
  `max_idle` kept idle, none older than `keepalive_expiry` seconds;
- a kept connection is reused only if the server has not closed it meanwhile (a readable idle
  socket means end of file or junk: it is dropped and a new one opened before anything is sent);
- a request is never sent twice: `http.client` does not retry, and neither does this;
- errors are httpx's, by the moment they happen: before anything was sent `ConnectError` or
  `ConnectTimeout` (safe to repeat), while sending `WriteError` or `WriteTimeout`, while
  waiting for or reading the answer `ReadTimeout`, `RemoteProtocolError` or `ReadError` (the
  request may have been applied);
- TLS with httpx's own default context (certifi, `SSL_CERT_FILE`), so verification is the same.

Content-Encoding is not undone here; httpx's `Response.read` does it, as with httpcore.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import httpx

__all__ = ["StdlibTransport"]

_SocketTimeout = (TimeoutError, socket.timeout)


class _Body(httpx.SyncByteStream):
    """The whole body, read before the response is handed back."""

    __slots__ = ("content",)

    def __init__(self, content: bytes) -> None:
        self.content = content

    def __iter__(self) -> Iterator[bytes]:
        yield self.content


class StdlibTransport(httpx.BaseTransport):
    """An httpx transport for one origin over `http.client` connections (see the module)."""

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
        self._ssl = ssl_context if ssl_context is not None or url.scheme == "http" else None
        if url.scheme == "https" and self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- connections --------------------------------------------------------------------------

    def _new(self, timeout: float | None) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self._ssl
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _take(self) -> http.client.HTTPConnection | None:
        """A kept connection still usable, or None."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    return None
                connection, since = self._idle.pop()
            if now - since <= self.keepalive_expiry and _still_open(connection):
                return connection
            connection.close()

    def _keep(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.max_idle:
                self._idle.append((connection, time.monotonic()))
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection, _ in idle:
            connection.close()

    # -- one exchange -------------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        timeouts = request.extensions.get("timeout", {})
        connection = self._take()
        if connection is None:
            connection = self._new(timeouts.get("connect"))
            try:
                connection.connect()
            except _SocketTimeout as exc:
                connection.close()
                raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
            except OSError as exc:  # refused, unreachable, name not found, TLS handshake
                connection.close()
                raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        sock = connection.sock
        assert sock is not None
        try:
            sock.settimeout(timeouts.get("write"))
            target = request.url.raw_path.decode("ascii")
            connection.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.raw:
                connection.putheader(name, value)
            connection.endheaders(request.read() or None)
        except _SocketTimeout as exc:
            connection.close()
            raise httpx.WriteTimeout(str(exc) or "write timed out") from exc
        except (ValueError, http.client.HTTPException) as exc:  # an illegal header or method
            connection.close()
            raise httpx.LocalProtocolError(str(exc)) from exc
        except OSError as exc:
            connection.close()
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        try:
            sock.settimeout(timeouts.get("read"))
            response = connection.getresponse()
            content = response.read()
        except _SocketTimeout as exc:
            connection.close()
            raise httpx.ReadTimeout(str(exc) or "read timed out") from exc
        except http.client.HTTPException as exc:  # no status line, bad headers, cut body
            connection.close()
            message = str(exc) or type(exc).__name__
            if isinstance(exc, http.client.RemoteDisconnected):
                message = "Server disconnected without sending a response."
            raise httpx.RemoteProtocolError(message) from exc
        except OSError as exc:
            connection.close()
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        if response.will_close:
            connection.close()
        else:
            self._keep(connection)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.getheaders()]
        return httpx.Response(
            response.status,
            headers=headers,
            stream=_Body(content),
            extensions={
                "http_version": b"HTTP/1.1" if response.version == 11 else b"HTTP/1.0",
                "reason_phrase": response.reason.encode("latin-1", "replace"),
            },
        )


def _still_open(connection: http.client.HTTPConnection) -> bool:
    """An idle kept-alive socket has nothing to read: readable means closed (or junk)."""
    sock = connection.sock
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False
