"""The paced transport: httpx's extension point for one API's bounds. Every attempt waits
for its token, ends by its deadline while the body streams, and is refused past the size bounds
or on a stop."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable

import httpx

from connector.http.pacing import TokenBucket

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
# The response status line and header block; httpcore's h11 refuses more than 100 KiB itself.
MAX_HEADER_BYTES = 64 * 1024
# Request extension: (seconds the attempt may take once paced, monotonic time the request ends).
_DEADLINE = "kantata_sync.deadline"


class ResponseTooLargeError(httpx.TransportError):
    """A response over the size bound: refused while it streams, never held whole."""


class StoppedError(httpx.TransportError):
    """A stop was requested while the request waited (`sent` False) or its answer was
    arriving (`sent` True)."""

    def __init__(self, message: str, *, request: httpx.Request, sent: bool) -> None:
        super().__init__(message, request=request)
        self.sent = sent


def _environment_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment (HTTPS_PROXY, NO_PROXY, ...) names for `url`, if any."""
    if urllib.request.proxy_bypass(url.host):
        return None
    return urllib.request.getproxies_environment().get(url.scheme)


class PacedTransport(httpx.BaseTransport):
    """httpx's transport for one API with its bounds: each attempt takes a token from the API's
    `TokenBucket` first, ends by its deadline however slowly the answer trickles in (httpx's
    timeouts apply to each read), and refuses a header block or body over its size bound while
    it streams. A stop request ends a wait at once and an answer between two reads.

    The body is read (and decoded, so the bound holds for what is kept) here, and the response
    handed back holds it whole without its Content-Encoding."""

    def __init__(
        self,
        inner: httpx.BaseTransport,
        bucket: TokenBucket,
        on_attempt: Callable[[httpx.Request, float], None],
        *,
        max_body: int,
        clock: Callable[[], float],
        stop: threading.Event | None,
        on_exchange: Callable[[float, int | None], None] | None = None,
    ) -> None:
        self._inner = inner
        self._bucket = bucket
        self._on_attempt = on_attempt
        self._on_exchange = on_exchange
        self._max_body = max_body
        self._clock = clock
        self._stop = stop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._on_attempt(request, self._bucket.acquire())
        if self._stop is not None and self._stop.is_set():
            raise StoppedError("stopped before the request was sent", request=request, sent=False)
        bounds: tuple[float, float] | None = request.extensions.get(_DEADLINE)
        deadline = None
        if bounds is not None:
            # The attempt's time starts once it is paced: a wait for the rate limit is not
            # taken from it (only from the request's total).
            deadline = min(self._clock() + bounds[0], bounds[1])
            left = deadline - self._clock()
            if left <= 0:
                raise httpx.PoolTimeout("no time left for the request", request=request)
            timeout = request.extensions.get("timeout") or {}
            request.extensions = {
                **request.extensions,
                "timeout": {
                    phase: left if value is None else min(value, left)
                    for phase, value in {
                        "connect": None,
                        "read": None,
                        "write": None,
                        "pool": None,
                        **timeout,
                    }.items()
                },
            }
        sent = time.perf_counter()
        status: int | None = None
        try:
            response = self._inner.handle_request(request)
            try:
                read = self._read(request, response, deadline)
            except BaseException:
                response.close()
                raise
            if read is not response:
                response.close()
            status = read.status_code
            return read
        finally:
            # The exchange alone (not the pacing wait before it), answered or not.
            if self._on_exchange is not None:
                self._on_exchange(time.perf_counter() - sent, status)

    def _read(
        self, request: httpx.Request, response: httpx.Response, deadline: float | None
    ) -> httpx.Response:
        head = sum(len(name) + len(value) + 4 for name, value in response.headers.raw)
        if head > MAX_HEADER_BYTES:
            raise ResponseTooLargeError(
                f"response header block over {MAX_HEADER_BYTES} bytes", request=request
            )
        chunks: list[bytes] = []
        size = 0
        # Without Content-Encoding the transport's own stream is the body; with it, httpx
        # decodes, and the bound holds for the decoded bytes (a small gzip can unpack to GBs).
        encoded = "Content-Encoding" in response.headers
        for chunk in response.iter_bytes() if encoded else response.stream:  # type: ignore[union-attr]
            size += len(chunk)
            if size > self._max_body:
                raise ResponseTooLargeError(
                    f"response body over the limit of {self._max_body} bytes "
                    "(KANTATA_SYNC_HTTP_MAX_BODY_BYTES)",
                    request=request,
                )
            chunks.append(chunk)
            if deadline is not None and self._clock() > deadline:
                raise httpx.ReadTimeout(
                    f"the answer took longer than the request's timeout ({size} bytes read)",
                    request=request,
                )
            if self._stop is not None and self._stop.is_set():
                raise StoppedError(
                    "stopped while the answer was arriving", request=request, sent=True
                )
        if not encoded:
            # The body as it came: the transport's stream is closed (its connection goes back
            # to the pool) and the response keeps the bytes read, for the client to take.
            response.stream.close()  # type: ignore[union-attr]
            response.stream = httpx.ByteStream(b"".join(chunks))
            return response
        headers = httpx.Headers(response.headers)
        headers.pop("Content-Encoding", None)  # the body below is decoded already
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=b"".join(chunks),
            extensions=response.extensions,
            request=request,
        )

    def close(self) -> None:
        self._inner.close()
