"""Request statistics per API, counted per endpoint template (`GET /invoices/{id}.json`)."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_NUMERIC_SEGMENT = re.compile(r"(?<=/)\d+(?=/|\.|$)")


@functools.lru_cache(maxsize=1024)
def endpoint_template(method: str, path: str) -> str:
    """`"GET /invoices/{id}.json"` for `("get", "/invoices/12.json?x=1")`: numeric ids folded.

    Remembered for the last 1,024 paths: most requests go to a handful of paths."""
    bare = path.split("?", 1)[0].split("#", 1)[0] or "/"
    if not bare.startswith("/"):
        bare = "/" + bare
    return f"{method.upper()} {_NUMERIC_SEGMENT.sub('{id}', bare)}"


@dataclass
class ApiStats:
    """Counters of one transport, safe to update from many threads.

    `requests` counts HTTP attempts sent (retries and redirect hops included); `errors` attempts
    that did not succeed; `retries` the re-sends; `wait_seconds` the time spent waiting for the
    rate limiter; `by_endpoint` attempts per `"METHOD /path/{id}"`.
    """

    requests: int = 0
    errors: int = 0
    status_429: int = 0
    retries: int = 0
    wait_seconds: float = 0.0
    by_endpoint: dict[str, int] = field(default_factory=dict)
    observer: Callable[[float, int | None], None] | None = field(
        default=None, repr=False, compare=False
    )
    """Called after every exchange with its seconds and HTTP status (None when no answer came):
    the daemon's request-duration metrics and liveness."""
    _lock: threading.Lock = field(
        default_factory=threading.Lock, repr=False, compare=False, init=False
    )

    def record_request(self, endpoint: str, waited: float) -> None:
        with self._lock:
            self.requests += 1
            self.wait_seconds += waited
            self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + 1

    def record_exchange(self, seconds: float, status: int | None) -> None:
        observer = self.observer
        if observer is not None:
            observer(seconds, status)

    def record_error(self, *, status: int | None = None) -> None:
        with self._lock:
            self.errors += 1
            if status == 429:
                self.status_429 += 1

    def record_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of every counter, for metrics and benchmarks."""
        with self._lock:
            return {
                "requests": self.requests,
                "errors": self.errors,
                "status_429": self.status_429,
                "retries": self.retries,
                "wait_seconds": self.wait_seconds,
                "by_endpoint": dict(self.by_endpoint),
            }
