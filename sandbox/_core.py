"""Transport-free request handling shared by the fake Kantata and fake Noko.

A fake service receives a `Request` and returns a `Response`; `server.py` moves them over
HTTP. Everything in between — admin paths under `/_sandbox/`, rate limiting, fault injection,
request statistics, routing — lives here, so the fakes only implement their API.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import msgspec

from sandbox.faults import FaultConfig, FaultInjector, RateLimiter

__all__ = [
    "ADMIN_PREFIX",
    "ApiFailure",
    "Request",
    "Response",
    "Route",
    "Service",
    "dumps",
    "loads",
]

ADMIN_PREFIX = "/_sandbox"
JSON_TYPE = "application/json; charset=utf-8"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_WRITES_KEPT = 100_000


_ENCODER = msgspec.json.Encoder(decimal_format="number")


def dumps(value: object) -> bytes:
    """JSON bytes with Decimal written as exact numbers (never through float)."""
    return _ENCODER.encode(value)


def loads(body: bytes) -> Any:
    """Parse a JSON body; numbers with a fraction become Decimal, integers int."""
    return json.loads(body.decode("utf-8"), parse_float=Decimal)


@dataclass
class Request:
    """One HTTP request as the fakes see it."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    client: str = "127.0.0.1"
    raw_query: str = ""

    def header(self, name: str) -> str | None:
        """A header value, case-insensitively; None when absent."""
        lowered = name.lower()
        value = self.headers.get(lowered)
        if value is None:
            for key, candidate in self.headers.items():
                if key.lower() == lowered:
                    return candidate
        return value


@dataclass
class Response:
    """One HTTP response; `drop` closes the connection without sending anything; `fault` names
    a fault a handler injected itself (counted in the stats like the injector's)."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = JSON_TYPE
    drop: bool = False
    fault: str | None = None

    @classmethod
    def json(
        cls, status: int, payload: object, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        """A JSON response."""
        return cls(status, dumps(payload), headers or [])

    @classmethod
    def empty(cls, status: int, headers: list[tuple[str, str]] | None = None) -> Response:
        """A response with no body (204, Noko's empty 429)."""
        return cls(status, b"", headers or [], content_type=None)


class ApiFailure(Exception):
    """Raised by a handler to answer with an error response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


Handler = Callable[[Request, dict[str, str]], Response]


@dataclass(frozen=True)
class Route:
    """A method and a path template such as `/invoices/{id}/cancel`."""

    method: str
    template: str
    handler: Handler
    creating: bool = False

    @property
    def parts(self) -> tuple[str, ...]:
        """The template's path segments."""
        return tuple(p for p in self.template.split("/") if p)


class Router:
    """Matches a method and a path (relative to the base path) to a route and its parameters."""

    def __init__(self) -> None:
        self._by_len: dict[int, list[tuple[Route, tuple[str, ...]]]] = {}
        self._templates: set[str] = set()

    def add(self, route: Route) -> None:
        """Register a route."""
        parts = route.parts
        self._by_len.setdefault(len(parts), []).append((route, parts))
        self._templates.add(route.template)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], str]:
        """(route or None, parameters, template); the template is `?` when no path matched."""
        segments = [s for s in path.split("/") if s]
        path_matched: str | None = None
        for route, parts in self._by_len.get(len(segments), ()):
            params: dict[str, str] = {}
            for part, segment in zip(parts, segments, strict=True):
                if part[0] == "{":
                    params[part[1:-1]] = segment
                elif part != segment:
                    break
            else:
                if route.method == method or (method == "HEAD" and route.method == "GET"):
                    return route, params, route.template
                path_matched = route.template
        return None, {}, path_matched or "?"


class Stats:
    """Request counters per `METHOD /template`, per status, per fault, and every write body."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.rate_limited = 0
        self.writes: list[dict[str, Any]] = []

    def record(
        self,
        key: str,
        status: int,
        *,
        fault: str | None = None,
        rate_limited: bool = False,
        write: dict[str, Any] | None = None,
    ) -> None:
        """Count one answered (or dropped) request."""
        with self._lock:
            self.requests[key] += 1
            self.statuses[str(status)] += 1
            if fault:
                self.faults[fault] += 1
            if rate_limited:
                self.rate_limited += 1
            if write is not None and len(self.writes) < MAX_WRITES_KEPT:
                self.writes.append(write)

    def mark_dropped(self, method: str, path: str, fault: str = "drop") -> None:
        """The latest recorded write of `method path` had its answer dropped after all."""
        with self._lock:
            self.faults[fault] += 1
            for write in reversed(self.writes):
                if write["method"] == method and write["path"] == path and not write["dropped"]:
                    write["dropped"] = True
                    write["fault"] = fault
                    return

    def reset(self) -> None:
        """Forget every counter and recorded write."""
        with self._lock:
            self.requests.clear()
            self.statuses.clear()
            self.faults.clear()
            self.rate_limited = 0
            self.writes.clear()

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready copy of the counters."""
        with self._lock:
            return {
                "requests": dict(sorted(self.requests.items())),
                "total": sum(self.requests.values()),
                "statuses": dict(sorted(self.statuses.items())),
                "faults": dict(sorted(self.faults.items())),
                "rate_limited": self.rate_limited,
                "count_429": self.statuses.get("429", 0),
                "writes": list(self.writes),
            }


def parse_bool(value: str | None) -> bool | None:
    """Query-string boolean: true/1/yes or false/0/no; None when absent or unrecognised."""
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "t"):
        return True
    if lowered in ("false", "0", "no", "f"):
        return False
    return None


def parse_date(value: object) -> date | None:
    """A `YYYY-MM-DD` string -> date; None when it is not one."""
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def utc_now() -> datetime:
    """The current UTC time at second precision."""
    return datetime.now(UTC).replace(microsecond=0)


class Clock:
    """Wall-clock time shifted by an offset, or frozen at a set instant; second precision."""

    def __init__(self) -> None:
        self._frozen: datetime | None = None
        self._offset = 0.0

    def now(self) -> datetime:
        """The service's current time (aware, UTC, whole seconds)."""
        if self._frozen is not None:
            return self._frozen
        return datetime.fromtimestamp(int(time.time() + self._offset), UTC)

    def set(self, when: datetime | None, *, frozen: bool = True) -> None:
        """Freeze at `when` (or jump there and keep running); None returns to wall-clock time."""
        if when is None:
            self._frozen = None
            self._offset = 0.0
            return
        if when.tzinfo is None:
            raise ValueError("the clock needs an aware datetime")
        when = when.astimezone(UTC).replace(microsecond=0)
        if frozen:
            self._frozen = when
        else:
            self._frozen = None
            self._offset = when.timestamp() - time.time()

    def advance(self, seconds: float) -> None:
        """Move the clock forward (or back, with a negative number)."""
        if self._frozen is not None:
            self._frozen = datetime.fromtimestamp(int(self._frozen.timestamp() + seconds), UTC)
        else:
            self._offset += seconds

    @property
    def frozen(self) -> bool:
        """Whether the clock stands still."""
        return self._frozen is not None


def page_link_query(query: Mapping[str, str], page: int, per_page: int) -> str:
    """The request's query with `page` and `per_page` replaced."""
    items = [(k, v) for k, v in query.items() if k not in ("page", "per_page")]
    items += [("page", str(page)), ("per_page", str(per_page))]
    return urlencode(items)


def _echo_token(request: Request, offset: int) -> str:
    """An error message repeating the request's credential `offset` characters in."""
    token = ""
    for name in ("Authorization", "X-NokoToken"):
        value = (request.header(name) or "").strip()
        if value:
            token = value.partition(" ")[2].strip() if name == "Authorization" else value
            break
    filler = ("invalid request " * (offset // 16 + 1))[:offset]
    return f"{filler}{token} was not accepted for this request"


class Service:
    """Base of a fake API: admin paths, rate limit, faults, stats, auth and routing."""

    name = "service"
    base_path = "/"
    strip_json_suffix = False

    def __init__(
        self,
        *,
        faults: FaultConfig | None = None,
        rate_limit: float | None = None,
        burst: int = 5,
    ) -> None:
        self.mutex = threading.RLock()
        self.injector = FaultInjector(faults)
        self.limiter: RateLimiter | None = RateLimiter(rate_limit, burst) if rate_limit else None
        self.stats = Stats()
        self.clock = Clock()
        self.public_url = ""
        self.router = Router()
        self.admin = Router()
        self._sleep: Callable[[float], None] = time.sleep
        self._register_admin_common()

    # ----- configuration -------------------------------------------------------------------
    def set_faults(self, config: FaultConfig | None) -> None:
        """Replace the fault configuration (None = no faults)."""
        self.injector.set_config(config)

    def set_rate_limit(self, rate: float | None, burst: int = 5) -> None:
        """Replace the rate limit (None = unlimited)."""
        self.limiter = RateLimiter(rate, burst) if rate else None

    def reset_stats(self) -> None:
        """Forget request statistics."""
        self.stats.reset()

    def set_clock(self, when: datetime | None, *, frozen: bool = True) -> None:
        """Freeze the service clock at `when` (None: back to wall-clock time)."""
        with self.mutex:
            self.clock.set(when, frozen=frozen)

    def advance_clock(self, seconds: float) -> None:
        """Move the service clock by `seconds`."""
        with self.mutex:
            self.clock.advance(seconds)

    # ----- hooks for subclasses ------------------------------------------------------------
    def error(self, status: int, message: str, **extra: Any) -> Response:
        """An error response in the service's own format."""
        raise NotImplementedError

    def rate_limited_response(self, retry_after: bool) -> Response:
        """The 429 answer of this service."""
        raise NotImplementedError

    def fault_response(self, status: int) -> Response:
        """A 5xx answer of this service (or the 401 of a revoked token)."""
        if status == 401:
            return self.error(401, "The access token was revoked or has expired")
        if status == 502:
            html = (
                "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
                "</body>\r\n</html>\r\n"
            )
            return Response(502, html.encode(), content_type="text/html")
        return self.error(status, "Service is unavailable" if status == 503 else "Server error")

    def check_request(self, request: Request) -> Response | None:
        """Authentication and header checks; a response refuses the request."""
        return None

    def state(self) -> dict[str, Any]:
        """Everything a test may want to assert on, JSON-ready."""
        raise NotImplementedError

    def state_response(self, request: Request) -> Response:
        """The answer of `GET /_sandbox/state`."""
        with self.mutex:
            return Response.json(200, self.state())

    # ----- request handling ----------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Answer one request (this may sleep: latency, timeouts, rate-limit slow-down)."""
        path = request.path
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            return self._handle_admin(request)
        base = self.base_path
        if not (path == base or path.startswith(base + "/")):
            return self.error(404, "Not found")
        rel = path[len(base) :] or "/"
        if self.strip_json_suffix and rel.endswith(".json"):
            rel = rel[:-5]
        method = request.method
        route, params, template = self.router.match(method, rel)
        key = f"{method} {template}"

        if self.limiter is not None:
            wait = self.limiter.acquire(request.client, time.monotonic())
            if wait is None:
                response = self.rate_limited_response(False)
                self._record(key, request, response, fault=None, rate_limited=True)
                return response
            if wait > 0:
                self._sleep(wait)

        fault = self.injector.decide(rel, creating=bool(route and route.creating), full_path=path)
        if fault.delay_s > 0:
            self._sleep(fault.delay_s)
        if fault.status is not None:
            if fault.status == 429:
                response = self.rate_limited_response(fault.retry_after)
            else:
                response = self.fault_response(fault.status)
            self._record(key, request, response, fault=fault.kind)
            return response
        if fault.echo_token_offset is not None:
            response = self.error(422, _echo_token(request, fault.echo_token_offset))
            self._record(key, request, response, fault=fault.kind)
            return response

        refused = self.check_request(request)
        if refused is not None:
            self._record(key, request, refused, fault=fault.kind)
            return refused
        if route is None:
            if template != "?":
                response = self.error(405, f"Method {method} not allowed on {template}")
            else:
                response = self.error(404, "Not found")
            self._record(key, request, response, fault=fault.kind)
            return response
        try:
            with self.mutex:
                response = route.handler(request, params)
        except ApiFailure as failure:
            response = failure.response
        kind = fault.kind or response.fault
        if fault.drop_after_commit:
            if 200 <= response.status < 300:
                response.drop = True
            else:  # nothing was committed: answer normally
                kind = "timeout" if fault.timeout else None
        self._record(key, request, response, fault=kind)
        if fault.sleep_after_s > 0:
            self._sleep(fault.sleep_after_s)  # committed; the answer comes too late
        return response

    def _record(
        self,
        key: str,
        request: Request,
        response: Response,
        *,
        fault: str | None,
        rate_limited: bool = False,
    ) -> None:
        write: dict[str, Any] | None = None
        if request.method in WRITE_METHODS:
            body: Any = None
            if request.body:
                try:
                    body = loads(request.body)
                except (ValueError, UnicodeDecodeError):
                    body = request.body.decode("utf-8", "replace")
            write = {
                "method": request.method,
                "path": request.path,
                "template": key.split(" ", 1)[1],
                "query": dict(request.query),
                "body": body,
                "status": response.status,
                "dropped": response.drop,
                "fault": fault,
            }
        self.stats.record(
            key,
            response.status,
            fault=fault,
            rate_limited=rate_limited,
            write=write,
        )

    # ----- admin -----------------------------------------------------------------------------
    def _register_admin_common(self) -> None:
        self.admin.add(Route("GET", "/state", lambda r, p: self.state_response(r)))
        self.admin.add(Route("POST", "/faults", self._admin_faults))
        self.admin.add(Route("GET", "/faults", self._admin_get_faults))
        self.admin.add(Route("POST", "/reset_stats", self._admin_reset_stats))
        self.admin.add(Route("GET", "/stats", self._admin_stats))
        self.admin.add(Route("POST", "/rate_limit", self._admin_rate_limit))
        self.admin.add(Route("POST", "/clock", self._admin_clock))

    def _handle_admin(self, request: Request) -> Response:
        rel = request.path[len(ADMIN_PREFIX) :] or "/"
        route, params, _template = self.admin.match(request.method, rel)
        if route is None:
            return Response.json(404, {"message": f"no admin endpoint {request.method} {rel}"})
        try:
            return route.handler(request, params)
        except ApiFailure as failure:
            return failure.response
        except (ValueError, TypeError, KeyError) as exc:
            return Response.json(400, {"message": f"{type(exc).__name__}: {exc}"})

    @staticmethod
    def admin_body(request: Request) -> dict[str, Any]:
        """The admin request's JSON object body ({} when empty)."""
        if not request.body.strip():
            return {}
        data = loads(request.body)
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        return data

    def _admin_faults(self, request: Request, params: dict[str, str]) -> Response:
        config = FaultConfig.from_json(self.admin_body(request))
        self.set_faults(config)
        return Response.json(200, config.to_json())

    def _admin_get_faults(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(200, self.injector.config.to_json())

    def _admin_reset_stats(self, request: Request, params: dict[str, str]) -> Response:
        self.reset_stats()
        return Response.empty(204)

    def _admin_stats(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(200, self.stats.snapshot())

    def _admin_rate_limit(self, request: Request, params: dict[str, str]) -> Response:
        body = self.admin_body(request)
        rate = body.get("rate")
        burst = body.get("burst", 5)
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | Decimal)):
            raise ValueError("rate must be a number or null")
        if isinstance(burst, bool) or not isinstance(burst, int):
            raise ValueError("burst must be an integer")
        self.set_rate_limit(float(rate) if rate is not None else None, burst)
        return Response.json(200, {"rate": rate, "burst": burst})

    def _admin_clock(self, request: Request, params: dict[str, str]) -> Response:
        body = self.admin_body(request)
        if "set" in body:
            value = body["set"]
            when = None if value is None else parse_timestamp(str(value))
            if value is not None and when is None:
                raise ValueError(f"not an ISO 8601 timestamp: {value!r}")
            self.set_clock(when, frozen=bool(body.get("frozen", True)))
        if "advance" in body:
            seconds = body["advance"]
            if isinstance(seconds, bool) or not isinstance(seconds, int | Decimal):
                raise ValueError("advance must be a number of seconds")
            self.advance_clock(float(seconds))
        return Response.json(
            200, {"now": self.clock.now().isoformat(), "frozen": self.clock.frozen}
        )


def parse_timestamp(value: str, default_tz: Any = UTC) -> datetime | None:
    """ISO 8601 date-time (offset, `Z`, or none = `default_tz`) -> aware datetime; None if bad."""
    text = value.strip()
    if not text or len(text) < 10:
        return None
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=default_tz)
    return parsed
