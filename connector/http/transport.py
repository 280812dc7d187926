"""The transport: one API's `httpx.Client` over a `PacedTransport` (`paced.py`), the retry
loop around each request, redirects followed by hand; failures become typed errors in
`failures.py`."""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
import structlog
from pydantic import SecretStr

from connector.errors import (
    PermanentApiError,
)
from connector.http.codec import decode_json, decode_typed, encode_json
from connector.http.failures import _Failure, _RedirectRefused, api_error, status_failure
from connector.http.paced import (
    _DEADLINE,
    DEFAULT_MAX_BODY_BYTES,
    PacedTransport,
    ResponseTooLargeError,
    StoppedError,
    _environment_proxy,
)
from connector.http.pacing import TokenBucket
from connector.http.retry import RetryPolicy
from connector.http.stats import ApiStats, endpoint_template
from connector.http.text import clean

IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE", "HEAD", "OPTIONS"})
MAX_REDIRECTS = 5
BODY_SNIPPET = 200

# Header names whose values are credentials; matched case-insensitively.
_SECRET_HEADER_HINTS = ("authorization", "token", "api-key", "apikey", "secret", "cookie")
_NUMERIC_SEGMENT = re.compile(r"(?<=/)\d+(?=/|\.|$)")

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def _secrets_of(headers: Mapping[str, str]) -> tuple[SecretStr, ...]:
    """Credential values to redact: whole header values, and the credential of `Bearer x`."""
    found: list[SecretStr] = []
    for name, value in headers.items():
        if not value or not any(hint in name.lower() for hint in _SECRET_HEADER_HINTS):
            continue
        found.append(SecretStr(value))
        scheme, _, credential = value.partition(" ")
        if credential.strip() and scheme.isalpha():
            found.append(SecretStr(credential.strip()))
    # Longest first, so a whole "Bearer x" is replaced before its credential alone.
    return tuple(sorted(found, key=lambda s: -len(s.get_secret_value())))


# A path made of these characters only reads the same after httpx's percent-encoding and
# dot-segment removal; any other is left to httpx's client to merge with the base URL.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._~/-]*")


# Parsing an URL costs httpx some 20 us; most requests go to a few URLs (POST /expenses, ...),
# and an `httpx.URL` is immutable, so the last 1,024 are kept.
_parse_url = functools.lru_cache(maxsize=1024)(httpx.URL)


def _query_text(value: Any) -> str:
    """A query value as httpx writes it (`true`/`false` for booleans, empty for None)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value)


class _NoCookies(httpx.Cookies):
    """An API client keeps no session: a `Set-Cookie` is neither stored nor sent back, and the
    standard library's cookie parsing is not paid on every answer."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _Client(httpx.Client):
    """`httpx.Client` without a cookie jar (see `_NoCookies`)."""

    _no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        return None


class ApiTransport:
    """One API's HTTP client: base URL, headers, pacing, retries and error translation.

    Built on `httpx.Client` with a `PacedTransport` around httpx's own transport (or the one
    given, for tests), which paces every attempt and bounds its time and size. This class
    decides what to do with each attempt's outcome: retry (and how long to wait), give up, or
    report a write that may have been applied. Redirects are followed here, by hand: on the
    same origin only (the token never travels elsewhere), each hop paced, and the request
    repeated verbatim as Noko's documents ask; a 303 (which means "GET this instead") is
    followed for a GET only. One request, its retries and waits included, ends by
    `retry.max_total`; each attempt by `timeout`.
    """

    def __init__(
        self,
        service: str,
        base_url: str,
        headers: Mapping[str, str],
        *,
        rate: float | None,
        burst: int,
        retry: RetryPolicy,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        logger: Any = None,
        stop: threading.Event | None = None,
        max_body: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.service = service
        self.base_url = httpx.URL(base_url.rstrip("/") + "/")
        if self.base_url.scheme not in ("http", "https") or not self.base_url.host:
            raise ValueError(f"{service}: base URL must be an absolute http(s) URL")
        self._base_path = self.base_url.path.rstrip("/")
        self.retry = retry
        self.timeout = timeout
        self.stats = ApiStats()
        self._sleep = sleep
        self._clock = clock
        self._stop = stop
        self._bucket = TokenBucket(rate, burst, clock=clock, sleep=self._pause)
        self._log = logger if logger is not None else structlog.get_logger("kantata_sync.http")
        self._secrets = _secrets_of(headers)
        self._secret_values = tuple(s.get_secret_value() for s in self._secrets)
        self._base_text = str(self.base_url)
        if transport is None:
            transport = httpx.HTTPTransport(proxy=_environment_proxy(self.base_url))
        self._client = _Client(
            base_url=self.base_url,
            headers=dict(headers),
            timeout=timeout,
            transport=PacedTransport(
                transport,
                self._bucket,
                self._record_attempt,
                max_body=max_body,
                clock=clock,
                stop=stop,
                on_exchange=self.stats.record_exchange,
            ),
            follow_redirects=False,  # followed by hand: same origin only, each hop paced
            trust_env=False,  # the proxy, if any, is the inner transport's: every hop paced
        )
        self._timeouts = self._client.timeout.as_dict()
        # The client's headers, merged once: each request is built from these directly.
        self._headers = httpx.Headers(self._client.headers)
        self._json_headers = httpx.Headers(self._client.headers)
        self._json_headers["Content-Type"] = "application/json"
        # The same with the Host header httpx adds, for requests to the base URL's origin.
        self._netloc = self.base_url.netloc
        self._host_headers = httpx.Headers([(b"Host", self._netloc), *self._headers.raw])
        self._host_json_headers = httpx.Headers([(b"Host", self._netloc), *self._json_headers.raw])
        self._host_empty_headers = httpx.Headers(
            [(b"Host", self._netloc), (b"Content-Length", b"0"), *self._headers.raw]
        )

    def __repr__(self) -> str:
        return f"ApiTransport(service={self.service!r}, base_url={str(self.base_url)!r})"

    # -- public -------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send one request with pacing and retries; return the successful response."""
        response, _ = self._call(method, path, params, body, idempotent, expect_json=False)
        return response

    def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Like `request`, decoded with `Decimal` floats; 204 gives None."""
        _, decoded = self._call(method, path, params, body, idempotent, expect_json=True)
        return decoded

    def request_typed(
        self,
        method: str,
        path: str,
        decoder: msgspec.json.Decoder[Any],
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Like `request_json`, decoded into `decoder`'s type (a `msgspec.Struct` naming only
        the fields the caller reads: the rest of the body is skipped, not built). A 2xx body
        that is not that type fails like a body that is not JSON: it may have been applied."""
        _, decoded = self._call(
            method, path, params, body, idempotent, expect_json=True, decoder=decoder
        )
        return decoded

    def request_json_response(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
    ) -> tuple[httpx.Response, Any]:
        """Like `request_json`, also returning the response (for Link headers)."""
        return self._call(method, path, params, body, idempotent, expect_json=True)

    def get_url(self, absolute_url: str) -> httpx.Response:
        """GET a URL the API handed out (a Link next page); only on the base URL's host."""
        response, _ = self._call("GET", self._own_url(absolute_url), None, None, True, False)
        return response

    def get_url_json(self, absolute_url: str) -> tuple[httpx.Response, Any]:
        """`get_url`, decoded like `request_json` (a proxy page is retried, not returned)."""
        return self._call("GET", self._own_url(absolute_url), None, None, True, True)

    def close(self) -> None:
        self._client.close()

    # -- internals ----------------------------------------------------------------------------

    def _own_url(self, absolute_url: str) -> httpx.URL:
        url = httpx.URL(absolute_url)
        if not self._same_origin(url):
            raise PermanentApiError(
                self.service,
                f"refusing to follow a link to another host ({url.host or 'no host'})",
                method="GET",
            )
        return url

    def _same_origin(self, url: httpx.URL) -> bool:
        return (url.scheme, url.host, url.port) == (
            self.base_url.scheme,
            self.base_url.host,
            self.base_url.port,
        )

    def _pause(self, seconds: float) -> None:
        """Wait `seconds` (pacing, backoff); a stop request ends the wait at once."""
        stop = self._stop
        if stop is not None and self._sleep is time.sleep:
            stop.wait(seconds)
        elif seconds > 0:
            self._sleep(seconds)

    def _url(self, target: str | httpx.URL, query: Mapping[str, Any] | None) -> httpx.URL:
        """The absolute URL of a path under the base URL with its query, as httpx's client
        merges them. A plain path and scalar params (nearly every request) are written out and
        parsed once, where the client would parse the path, the merge and the params apart."""
        if isinstance(target, httpx.URL):
            return target.copy_merge_params(query) if query else target
        if (
            _PLAIN_PATH.fullmatch(target)
            and not target.startswith(".")
            and "/." not in target
            and not (query and any(isinstance(v, list | tuple) for v in query.values()))
        ):
            text = self._base_text + target.lstrip("/")
            if query:
                text += "?" + urlencode([(k, _query_text(v)) for k, v in query.items()])
            return _parse_url(text)
        return self._client.build_request("GET", target, params=query).url

    def _request(self, method: str, url: httpx.URL, content: bytes | None) -> httpx.Request:
        """The request as httpx builds it from `content=` (Host, then the client's headers,
        the content's type and length), its headers copied from ones made once: httpx would
        normalise them all again and build them twice."""
        if url.netloc != self._netloc:
            headers = self._json_headers if content is not None else self._headers
            return httpx.Request(method, url, content=content, headers=headers)
        if content is not None:
            headers = httpx.Headers(self._host_json_headers)
            headers["Content-Length"] = str(len(content))
        else:
            content = b""
            bodiless = method in ("POST", "PUT", "PATCH")
            headers = self._host_empty_headers if bodiless else self._host_headers
        request = httpx.Request(method, url, headers=headers, stream=httpx.ByteStream(content))
        request.read()
        return request

    def _record_attempt(self, request: httpx.Request, waited: float) -> None:
        self.stats.record_request(self._template(request.method, request.url), waited)

    def _stopped(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _template(self, method: str, url: httpx.URL | str) -> str:
        if isinstance(url, httpx.URL):
            path = url.path
            if self._base_path and path.startswith(self._base_path + "/"):
                path = path[len(self._base_path) :]
        else:
            path = url
        return endpoint_template(method, path)

    def _clean(self, text: str) -> str:
        """Text from an answer, fit to keep: this client's credentials and every registered
        secret removed (any fragment of them) before it is cut to `BODY_SNIPPET`, and its
        control characters neutralised (`connector.http.text.clean`)."""
        return clean(text, BODY_SNIPPET, secrets=self._secret_values)

    def _call(
        self,
        method: str,
        target: str | httpx.URL,
        params: Mapping[str, Any] | None,
        body: Any,
        idempotent: bool | None,
        expect_json: bool,
        decoder: msgspec.json.Decoder[Any] | None = None,
    ) -> tuple[httpx.Response, Any]:
        method = method.upper()
        safe_to_repeat = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        template = self._template(method, target)
        content = encode_json(body) if body is not None else None
        query = {k: v for k, v in params.items() if v is not None} if params else None
        request = self._request(method, self._url(target, query), content)
        started = self._clock()
        give_up_at = started + self.retry.max_total
        attempt = 0
        while True:
            attempt += 1
            response, failure, decoded = self._attempt(
                request,
                template,
                expect_json,
                decoder,
                give_up_at,
            )
            if failure is None:
                assert response is not None
                return response, decoded
            self.stats.record_error(status=failure.status)
            if failure.applied_maybe and not safe_to_repeat:
                self._log.warning(
                    "http_ambiguous_write",
                    service=self.service,
                    method=method,
                    path=template,
                    status=failure.status,
                    attempt=attempt,
                    error=failure.message,
                    request_id=failure.request_id,
                )
                raise api_error(self.service, failure, method, template, ambiguous=True)
            if not failure.retryable:
                raise api_error(self.service, failure, method, template)
            if failure.final:
                raise api_error(self.service, failure, method, template)
            delay = self.retry.delay(attempt, failure.retry_after)
            # A server asking for more than the rest of the budget is not slept through: the
            # caller gets the error now, with the server's own retry_after, and comes back later.
            wanted = max(delay, failure.retry_after or 0.0)
            if attempt >= self.retry.max_attempts or self._clock() + wanted > give_up_at:
                self._log.warning(
                    "http_gave_up",
                    service=self.service,
                    method=method,
                    path=template,
                    status=failure.status,
                    attempts=attempt,
                    error=failure.message,
                    request_id=failure.request_id,
                )
                failure.message += f" (gave up after {attempt} attempts)"
                raise api_error(self.service, failure, method, template, retry_after=delay)
            log = self._log.info if failure.status == 429 else self._log.warning
            log(
                "http_retry",
                service=self.service,
                method=method,
                path=template,
                status=failure.status,
                attempt=attempt,
                delay=round(delay, 3),
                error=failure.message,
                request_id=failure.request_id,
            )
            self.stats.record_retry()
            self._pause(delay)

    def _attempt(
        self,
        request: httpx.Request,
        template: str,
        expect_json: bool,
        decoder: msgspec.json.Decoder[Any] | None,
        give_up_at: float,
    ) -> tuple[httpx.Response | None, _Failure | None, Any]:
        if self._stopped():
            return None, _Failure("stopped before the request was sent", final=True), None
        try:
            response = self._send_following_redirects(request, give_up_at)
        except _RedirectRefused as exc:
            return None, _Failure(exc.reason, retryable=False, applied_maybe=exc.sent), None
        except (
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.PoolTimeout,
            httpx.ProxyError,
        ) as exc:
            # Nothing reached the server: safe to repeat even a POST.
            return None, _Failure(self._transport_message(exc)), None
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            return None, _Failure(self._transport_message(exc), retryable=False), None
        except StoppedError as exc:
            message = self._transport_message(exc)
            return None, _Failure(message, final=True, applied_maybe=exc.sent), None
        except ResponseTooLargeError as exc:
            # Not retried: the same answer would come again. A write may have been applied.
            message = self._transport_message(exc)
            return None, _Failure(message, retryable=False, applied_maybe=True), None
        except httpx.RemoteProtocolError as exc:
            if "Receive buffer too long" in str(exc):  # h11's bound on the header block
                message = f"response header block over {100 * 1024} bytes"
                return None, _Failure(message, retryable=False, applied_maybe=True), None
            return None, _Failure(self._transport_message(exc), applied_maybe=True), None
        except httpx.TransportError as exc:
            # Read timeouts, dropped connections: the server may have acted on it.
            return None, _Failure(self._transport_message(exc), applied_maybe=True), None
        failure = status_failure(response, self._clean)
        if failure is not None:
            return response, failure, None
        if not expect_json or response.status_code in (204, 205):
            return response, None, None
        try:
            if decoder is None:
                decoded = decode_json(response.content)
            else:
                decoded = decode_typed(response.content, decoder)
        except msgspec.ValidationError as exc:
            return (
                response,
                _Failure(
                    self._clean(f"unexpected response: {exc}"),
                    status=response.status_code,
                    request_id=response.headers.get("x-request-id"),
                    applied_maybe=True,
                ),
                None,
            )
        except (ValueError, UnicodeDecodeError):
            content_type = response.headers.get("content-type", "no content type")
            return (
                response,
                _Failure(
                    f"response is not JSON ({content_type}, {len(response.content)} bytes)",
                    status=response.status_code,
                    request_id=response.headers.get("x-request-id"),
                    applied_maybe=True,
                ),
                None,
            )
        return response, None, decoded

    def _send_following_redirects(
        self, request: httpx.Request, give_up_at: float
    ) -> httpx.Response:
        current = request
        for _ in range(MAX_REDIRECTS + 1):
            current.extensions = {"timeout": self._timeouts, _DEADLINE: (self.timeout, give_up_at)}
            response = self._client.send(current)
            if response.status_code not in _REDIRECT_STATUSES or "Location" not in response.headers:
                return response
            current = self._redirect(current, response)
        return response  # the last redirect itself: reported as an unexpected status

    def _redirect(self, request: httpx.Request, response: httpx.Response) -> httpx.Request:
        """The next hop: the same request, verbatim, to the Location on the same origin.

        Noko documents 301, 302 and 307 as "repeat the request verbatim"; a 308 says the same
        by its RFC. A 303 means "GET this instead": followed for a GET or HEAD only, since
        turning a write into a GET would report the write done when it was not."""
        status = response.status_code
        if status == 303 and request.method not in ("GET", "HEAD"):
            raise _RedirectRefused(
                f"redirect 303 would turn the {request.method} into a GET; not followed",
                sent=True,
            )
        try:
            url = httpx.URL(response.headers["Location"])
        except httpx.InvalidURL as exc:
            raise httpx.RemoteProtocolError(
                f"Invalid URL in location header: {exc}.", request=request
            ) from None
        if url.scheme and not url.host:
            url = url.copy_with(host=request.url.host)
        if url.is_relative_url:
            url = request.url.join(url)
        if request.url.fragment and not url.fragment:
            url = url.copy_with(fragment=request.url.fragment)
        if not self._same_origin(url):
            # Refused, not stripped: the request means nothing to another host without its
            # credentials, and sending them there would hand the token away.
            raise _RedirectRefused(
                f"redirect to another host refused ({url.host or 'no host'})", sent=False
            )
        return httpx.Request(
            request.method,
            url,
            headers=request.headers,
            content=request.content,
            extensions=request.extensions,
        )

    def _transport_message(self, exc: httpx.TransportError) -> str:
        detail = str(exc).strip()
        name = type(exc).__name__
        return self._clean(f"{name}: {detail}" if detail else name)
