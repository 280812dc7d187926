"""HTTP plumbing for the fakes: a keep-alive HTTP/1.1 server per fake, and `Sandbox` to run them
(Kantata, Noko and Xero).

Standard library only. Each response is written with one `sendall` (status line, headers,
body) on a socket with Nagle disabled, so keep-alive clients get thousands of answers a second.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import socket
import threading
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from sandbox._core import Request, Response, Service
from sandbox.faults import FaultConfig
from sandbox.kantata import FakeKantata
from sandbox.noko import FakeNoko
from sandbox.xero import API as XERO_API
from sandbox.xero import FakeXero

__all__ = ["Sandbox", "ServiceServer"]

_REQUEST_IDS = itertools.count(1)
_MAX_BODY = 64 * 1024 * 1024
_MAX_LINE = 65536


class _DateCache:
    """RFC 9110 `Date` header value of a second, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def get(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._value = formatdate(second, usegmt=True)
            self._second = second
        return self._value


_DATES = _DateCache()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kantata-sync-sandbox"
    sys_version = ""
    disable_nagle_algorithm = True
    server: ServiceServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging."""

    def handle_one_request(self) -> None:
        """Read one request with a lean parser (no email.parser), answer it, keep alive."""
        try:
            line = self.rfile.readline(_MAX_LINE + 1)
        except (TimeoutError, ConnectionError):
            self.close_connection = True
            return
        if not line:
            self.close_connection = True
            return
        if line in (b"\r\n", b"\n"):  # tolerate a stray blank line between requests
            return
        self.raw_requestline = line
        parts = line.decode("latin-1").split()
        if len(line) > _MAX_LINE or len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self.close_connection = True
            self.request_version = "HTTP/1.1"
            self._write(Response.json(400, {"message": "bad request line"}), head=False)
            return
        self.command, self.path, self.request_version = parts
        headers: dict[str, str] = {}
        count = 0
        while True:
            raw = self.rfile.readline(_MAX_LINE + 1)
            if raw in (b"\r\n", b"\n", b""):
                break
            count += 1
            if count > 200 or len(raw) > _MAX_LINE:
                self.close_connection = True
                self._write(Response.json(431, {"message": "headers too large"}), head=False)
                return
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        if self.request_version == "HTTP/1.0":
            self.close_connection = connection != "keep-alive"
        else:
            self.close_connection = connection == "close"
        self._dispatch(headers)

    def _read_body(self, headers: dict[str, str]) -> bytes | None:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(_MAX_LINE + 1)
                try:
                    size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                except ValueError:
                    return None
                if size == 0:
                    while self.rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(_MAX_LINE + 1)
        length_header = headers.get("content-length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            return None
        if length < 0 or length > _MAX_BODY:
            return None
        return self.rfile.read(length) if length else b""

    def _dispatch(self, headers: dict[str, str]) -> None:
        body = self._read_body(headers)
        if body is None:
            self.close_connection = True
            self._write(Response.json(400, {"message": "bad request body framing"}), head=False)
            return
        target = self.path
        path, _, raw_query = target.partition("?")
        if path.startswith(("http://", "https://")):
            path = urlsplit(path).path
        query: dict[str, str] = {}
        if raw_query:
            for key, value in parse_qsl(raw_query, keep_blank_values=True):
                query.setdefault(key, value)
        request = Request(
            method=self.command,
            path=unquote(path) or "/",
            query=query,
            headers=headers,
            body=body,
            client=self.client_address[0],
            raw_query=raw_query,
        )
        try:
            response = self.server.service.handle(request)
        except Exception as exc:  # noqa: BLE001 - a bug in a fake must answer 500, not hang
            response = self.server.service.error(500, f"sandbox error: {type(exc).__name__}: {exc}")
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(response, head=self.command == "HEAD")

    def _write(self, response: Response, *, head: bool) -> None:
        status = response.status
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Server: {self.server_version}",
            # The service's clock, the one its `updated_at` values come from (set or frozen
            # by a test, it moves both).
            f"Date: {_DATES.get(self.server.service.clock.now().timestamp())}",
            f"X-Request-Id: {next(_REQUEST_IDS):016x}",
        ]
        if response.content_type and (response.body or status != 204):
            lines.append(f"Content-Type: {response.content_type}")
        if status != 204 and not 100 <= status < 200:
            lines.append(f"Content-Length: {len(response.body)}")
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        if self.close_connection:
            lines.append("Connection: close")
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        payload = head_bytes if head or status == 204 else head_bytes + response.body
        try:
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True


class ServiceServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one fake service."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: Service) -> None:
        self.service = service
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, *, add: bool) -> None:
        """Remember open client sockets so `close_all` can end keep-alive connections."""
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_all(self) -> None:
        """Shut down every open client connection."""
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.server_address[1])


class Sandbox:
    """A fake Kantata, a fake Noko and a fake Xero on loopback ports, started and stopped
    together. Xero's identity, connections and Accounting API share one server, at the paths
    of the real hosts (`xero_token_url`, `xero_connections_url`, `xero_api_url`, ...)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        kantata_port: int = 0,
        noko_port: int = 0,
        kantata_token: str = "sandbox-kantata-token",  # noqa: S107 - fixed sandbox token
        noko_token: str = "sandbox-noko-token",  # noqa: S107 - fixed sandbox token
        kantata_faults: FaultConfig | None = None,
        noko_faults: FaultConfig | None = None,
        noko_rate_limit: float | None = None,
        noko_burst: int = 5,
        kantata_rate_limit: float | None = None,
        kantata_burst: int = 5,
        xero_port: int = 0,
        xero_per_minute: int = 60,
        xero_per_day: int = 5000,
    ) -> None:
        self.host = host
        self.kantata = FakeKantata(
            token=kantata_token,
            faults=kantata_faults,
            rate_limit=kantata_rate_limit,
            burst=kantata_burst,
        )
        self.noko = FakeNoko(
            token=noko_token, faults=noko_faults, rate_limit=noko_rate_limit, burst=noko_burst
        )
        self.xero = FakeXero(per_minute=xero_per_minute, per_day=xero_per_day)
        self._ports = (kantata_port, noko_port, xero_port)
        self._servers: list[ServiceServer] = []
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        self.kantata_url = ""
        self.noko_url = ""
        self.xero_url = ""
        """The fake Xero's root; the API, token, connections and authorize URLs are below."""

    @property
    def xero_api_url(self) -> str:
        """XERO_BASE_URL for the fake Xero."""
        return self.xero_url + XERO_API

    @property
    def xero_token_url(self) -> str:
        return self.xero_url + "/connect/token"

    @property
    def xero_authorize_url(self) -> str:
        return self.xero_url + "/connect/authorize"

    @property
    def xero_connections_url(self) -> str:
        return self.xero_url + "/connections"

    def start(self) -> Sandbox:
        """Bind the servers and serve them from background threads; returns self."""
        if self._servers:
            return self
        self._stopped.clear()
        servers: list[ServiceServer] = []
        try:
            for service, port in zip(
                (self.kantata, self.noko, self.xero), self._ports, strict=True
            ):
                servers.append(ServiceServer((self.host, port), service))
        except OSError:
            for server in servers:
                server.server_close()
            raise
        kantata, noko, xero = servers
        self._servers = servers
        url_host = f"[{self.host}]" if ":" in self.host else self.host
        self.kantata_url = f"http://{url_host}:{kantata.port}{FakeKantata.base_path}"
        self.noko_url = f"http://{url_host}:{noko.port}{FakeNoko.base_path}"
        self.xero_url = f"http://{url_host}:{xero.port}"
        self.kantata.public_url = self.kantata_url
        self.noko.public_url = self.noko_url
        self.xero.public_url = self.xero_url
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.02},
                name=f"sandbox-{server.service.name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving, close the listening sockets and every open connection."""
        servers, self._servers = self._servers, []
        stoppers = [threading.Thread(target=server.shutdown, daemon=True) for server in servers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(timeout=5)
        for server in servers:
            server.server_close()
            server.close_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        self._stopped.set()

    @property
    def running(self) -> bool:
        """Whether the servers are up."""
        return bool(self._servers)

    def serve_forever(self) -> None:
        """Start (if needed) and block until SIGINT/SIGTERM or `stop()`."""
        self.start()
        previous: dict[signal.Signals, Any] = {}
        in_main = threading.current_thread() is threading.main_thread()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._stopped.set()

        if in_main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            while not self._stopped.wait(0.2):
                pass
        finally:
            if in_main:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            if self._servers:
                self.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
