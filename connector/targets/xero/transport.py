"""The Xero request loop: every call sends `Accept: application/json` and `xero-tenant-id`
(the tenant comes from `GET /connections` when not configured: exactly one organisation is
required). Calls are paced to 60 a minute with at most 5 in flight. A 429 pauses every Xero call
of the process until its `Retry-After` has passed; a 429 for the day limit raises
`XeroDailyLimitReached` with the time Xero announced. A 401 `TokenExpired` gets a new token and
repeats the call once; a fresh token refused raises `XeroAuthError`. A write (PUT/POST) with no
answer, a 5xx or 408 raises `AmbiguousWriteError`: the caller looks it up before resending.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from connector.errors import (
    AmbiguousWriteError,
    ConfigError,
    LimitReachedError,
    NotFoundError,
    PermanentApiError,
    TransientApiError,
)
from connector.http import TokenBucket, decode_json, encode_json, parse_retry_after
from connector.targets.xero.auth import TokenSource, XeroAuthError

log = structlog.get_logger(__name__)

BASE_URL = "https://api.xero.com/api.xro/2.0"
CONNECTIONS_URL = "https://api.xero.com/connections"
MAX_429 = 20
_SAFE_TO_RESEND = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class XeroDailyLimitReached(LimitReachedError):
    """Xero's day limit for this organisation is spent: end the cycle cleanly, try again
    (one call) on the next one whatever `resume_at` says. Neither transient nor permanent:
    no invoice is failed for it."""

    resume_at: datetime

    def __init__(self, resume_at: datetime, *, path: str = "") -> None:
        super().__init__(
            "xero",
            f"Xero's daily limit reached; resumes after {resume_at:%Y-%m-%d %H:%M:%S} UTC",
            resume_at=resume_at,
            status=429,
            path=path,
        )

    def __str__(self) -> str:
        return self.message


DAY_LIMIT_HOLD = 10.0
"""Seconds after Xero's day-limit answer in which this client sends nothing more (the rest of
that cycle); then one call tries again."""


class PauseGate:
    """One pause shared by every Xero client of the process (a 429 stops them all)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._until = 0.0

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)

    def wait(self) -> float:
        with self._lock:
            left = self._until - self._clock()
        if left > 0:
            self._sleep(left)
            return left
        return 0.0


PROCESS_GATE = PauseGate()


@dataclass
class Limits:
    minute_remaining: int | None = None
    day_remaining: int | None = None


class XeroTransport:
    """One Xero organisation's request loop: headers, pacing, limits, token renewal, errors."""

    def __init__(
        self,
        tokens: TokenSource,
        *,
        base_url: str = BASE_URL,
        connections_url: str = CONNECTIONS_URL,
        tenant_id: str | None = None,
        per_minute: int = 60,
        concurrent: int = 5,
        http: httpx.Client | None = None,
        gate: PauseGate | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_attempts: int = 5,
    ) -> None:
        self.tokens = tokens
        self.base_url = base_url.rstrip("/")
        self.connections_url = connections_url
        self.tenant_id = tenant_id
        self._http = http or httpx.Client(timeout=60.0)
        self._gate = gate or PROCESS_GATE
        self._bucket = TokenBucket(per_minute / 60.0, 1, clock=clock, sleep=sleep)
        self._day_spent: tuple[datetime, datetime] | None = None
        """Xero said the day's budget is spent: (hold until, the resume time announced)."""
        self._flight = threading.BoundedSemaphore(max(1, concurrent))
        self._sleep = sleep
        self._wall = wall
        self._max_attempts = max_attempts
        self.limits = Limits()
        self.requests = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, tenant_id={self.tenant_id!r})"

    # ----- the one request loop -------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        absolute: str | None = None,
    ) -> Any:
        url = absolute or self.base_url + path
        shown = urlsplit(url).path
        write = method in ("PUT", "POST")
        content = encode_json(body) if body is not None else None
        renewed = False
        attempt = 0
        limited = 0
        while True:
            attempt += 1
            self._gate.wait()
            spent = self._day_spent
            if spent is not None and self._wall() < spent[0]:
                # The other calls of the cycle that met the day limit stop without a request;
                # the next cycle tries again with one call, whatever reset time was announced.
                raise XeroDailyLimitReached(spent[1], path=shown)
            sent = {"Accept": "application/json", **(headers or {})}
            if absolute is None:
                sent["xero-tenant-id"] = self.tenant()
            if content is not None:
                sent["Content-Type"] = "application/json"
            try:
                sent["Authorization"] = "Bearer " + self.tokens.access_token()
            except TransientApiError as exc:
                # The token endpoint busy (429, 5xx) or unreachable: retried as the call is.
                # A Retry-After holds every Xero call of the process, as an API 429 does.
                if attempt >= self._max_attempts:
                    raise
                if exc.retry_after is not None:
                    self._gate.pause(exc.retry_after)
                else:
                    self._sleep(min(2.0**attempt, 30.0))
                continue
            request = self._http.build_request(
                method, url, params=params, content=content, headers=sent
            )
            with self._flight:
                self._bucket.acquire()
                self.requests += 1
                try:
                    response = self._http.send(request)
                except httpx.HTTPError as exc:
                    kind = type(exc).__name__
                    if write and not isinstance(exc, _SAFE_TO_RESEND):
                        raise AmbiguousWriteError(
                            "xero",
                            f"no answer ({kind}): the write may have been applied",
                            method=method,
                            path=shown,
                        ) from None
                    if attempt >= self._max_attempts:
                        raise TransientApiError(
                            "xero", f"no answer ({kind})", method=method, path=shown
                        ) from None
                    self._sleep(min(2.0**attempt, 30.0))
                    continue
            self._read_limits(response)
            status = response.status_code
            if status == 429:
                wait = parse_retry_after(response.headers.get("Retry-After"))
                problem = response.headers.get("X-Rate-Limit-Problem", "").lower()
                if problem == "day":
                    resume = self._wall() + timedelta(seconds=wait or 0)
                    held = self._wall() + timedelta(seconds=DAY_LIMIT_HOLD)
                    self._day_spent = (held, resume)
                    log.warning("xero.day_limit", resume_at=resume.isoformat())
                    raise XeroDailyLimitReached(resume, path=shown)
                self._gate.pause(wait if wait is not None else 1.0)
                log.info("xero.rate_limited", problem=problem or "unknown", wait=wait)
                limited += 1
                if limited > MAX_429:
                    raise TransientApiError(
                        "xero",
                        "rate limited",
                        status=429,
                        method=method,
                        path=shown,
                        retry_after=wait,
                    )
                attempt -= 1  # a 429 was not applied: it costs no attempt
                continue
            if status == 401:
                detail = _detail(response)
                if "TokenExpired" in detail and not renewed:
                    renewed = True
                    self.tokens.invalidate()
                    attempt -= 1
                    continue
                raise XeroAuthError(
                    f"Xero refused the access token: {detail or 'Unauthorized'}",
                    status=401,
                    path=shown,
                )
            if status == 403:
                raise XeroAuthError(
                    f"forbidden for this tenant: {_detail(response)}", status=403, path=shown
                )
            if status >= 500 or status == 408:
                if write:
                    raise AmbiguousWriteError(
                        "xero",
                        f"HTTP {status}: the write may have been applied",
                        status=status,
                        method=method,
                        path=shown,
                    )
                if attempt >= self._max_attempts:
                    raise TransientApiError(
                        "xero", "server error", status=status, method=method, path=shown
                    )
                self._sleep(min(2.0**attempt, 30.0))
                continue
            if status == 404:
                raise NotFoundError(
                    "xero", _detail(response) or "not found", status=404, method=method, path=shown
                )
            if status >= 400:
                raise PermanentApiError(
                    "xero", _detail(response) or "refused", status=status, method=method, path=shown
                )
            try:
                return decode_json(response.content)
            except ValueError:
                if write:
                    raise AmbiguousWriteError(
                        "xero", "answer is not JSON", status=status, method=method, path=shown
                    ) from None
                raise TransientApiError(
                    "xero", "answer is not JSON", status=status, method=method, path=shown
                ) from None

    def _read_limits(self, response: httpx.Response) -> None:
        for header, name in (
            ("X-MinLimit-Remaining", "minute_remaining"),
            ("X-DayLimit-Remaining", "day_remaining"),
        ):
            value = response.headers.get(header)
            if value is not None and value.strip().isdigit():
                setattr(self.limits, name, int(value))

    # ----- tenant ----------------------------------------------------------------------------
    def tenant(self) -> str:
        if self.tenant_id is None:
            rows = self._call("GET", "", absolute=self.connections_url)
            tenants = [r.get("tenantId") for r in rows if isinstance(r, dict)]
            if len(tenants) != 1:
                raise ConfigError(
                    f"XERO_TENANT_ID is not set and these credentials reach {len(tenants)} "
                    "organisations: set it to one of them"
                )
            self.tenant_id = str(tenants[0])
        return self.tenant_id


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    parts = [str(body.get(k)) for k in ("Detail", "Message", "Title") if body.get(k)]
    for element in body.get("Elements") or []:
        for error in element.get("ValidationErrors") or []:
            parts.append(str(error.get("Message")))
    return "; ".join(dict.fromkeys(parts))[:500]
