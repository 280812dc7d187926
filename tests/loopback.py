"""A loopback HTTP/1.1 server for the tests of the HTTP layer, scripted per request."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

Reply = Callable[[bytes, bytes], bytes | None]
"""(request head, request body) -> bytes to send, or None to close the connection at once."""


class Last(bytes):
    """Bytes a reply sends just before closing the connection."""


class Trickle(bytes):
    """Bytes a reply sends slowly: the first `at_once` at once, then one every `interval` s."""

    at_once: int = 0
    interval: float = 1.0


def trickle(data: bytes, *, at_once: int, interval: float) -> Trickle:
    slow = Trickle(data)
    slow.at_once = at_once
    slow.interval = interval
    return slow


def response_bytes(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """An HTTP/1.1 response with the given headers and a Content-Length of its own."""
    lines = [f"HTTP/1.1 {status} X"] + [
        f"{name}: {value}"
        for name, value in headers
        if name.lower() not in ("content-length", "transfer-encoding", "connection")
    ]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def json_reply(body: bytes, *, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
        % (extra, len(body), body)
    )


def read_requests(connection: socket.socket) -> Iterator[tuple[bytes, bytes]]:
    """The requests arriving on one connection, as (head, body), until the peer closes: the
    head up to its blank line, then as many body bytes as its Content-Length says."""
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            chunk = connection.recv(65536)
            if not chunk:
                return
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(buffer) < length:
            chunk = connection.recv(65536)
            if not chunk:
                return
            buffer += chunk
        body, buffer = buffer[:length], buffer[length:]
        yield head, body


class LoopbackServer:
    """A loopback HTTP/1.1 server; each request is answered by the next scripted reply (the
    last one repeats). Records every request and every connection accepted."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v2"
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                for head, body in read_requests(connection):
                    self.requests.append((head, body))
                    index = min(len(self.requests), len(self.replies)) - 1
                    answer = self.replies[index](head, body)
                    if answer is None:
                        return
                    if isinstance(answer, Trickle):
                        connection.sendall(answer[: answer.at_once])
                        for index in range(answer.at_once, len(answer)):
                            if self._closed.wait(answer.interval):
                                return
                            connection.sendall(answer[index : index + 1])
                    elif answer:
                        connection.sendall(answer)
                    if isinstance(answer, Last):
                        return
            except OSError:
                return

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for connection in self.connections:
            connection.close()
