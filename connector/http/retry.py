"""The retry policy of one request, and the `Retry-After` header read as seconds."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one request.

    `max_attempts` counts the first try. Backoff is exponential with full jitter, capped by
    `max_delay`; a server's Retry-After is honoured as given, even above `max_delay`, up to
    `max_total`, which caps the sum of all retry delays of one request.
    """

    max_attempts: int = 6
    initial_delay: float = 0.5
    max_delay: float = 30.0
    max_total: float = 300.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.initial_delay, self.max_delay, self.max_total) < 0:
            raise ValueError("retry delays must not be negative")

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 = the first try)."""
        if retry_after is not None:
            return min(max(0.0, retry_after), self.max_total)
        ceiling = min(self.max_delay, self.initial_delay * 2.0 ** max(0, attempt - 1))
        if self.jitter:
            return random.uniform(0.0, ceiling)
        return ceiling


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN compares unequal
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = time.time() if now is None else now
    return max(0.0, when.timestamp() - reference)
