"""Building one API's requests as httpx's client would, with less work per request: the URL
of a path under the base URL with its query, the headers merged once, and the next hop of a
redirect (same origin only)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx

from connector.errors import PermanentApiError
from connector.http.failures import _RedirectRefused

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

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


class RequestBuilder:
    """The requests of one API (`base_url`) sent through `client`: built from headers made
    once, on the base URL's origin only when they follow a link or a redirect."""

    def __init__(self, service: str, base_url: httpx.URL, client: httpx.Client) -> None:
        self.service = service
        self.base_url = base_url
        self._base_text = str(base_url)
        self._client = client
        # The client's headers, merged once: each request is built from these directly.
        self._headers = httpx.Headers(client.headers)
        self._json_headers = httpx.Headers(client.headers)
        self._json_headers["Content-Type"] = "application/json"
        # The same with the Host header httpx adds, for requests to the base URL's origin.
        self._netloc = base_url.netloc
        self._host_headers = httpx.Headers([(b"Host", self._netloc), *self._headers.raw])
        self._host_json_headers = httpx.Headers([(b"Host", self._netloc), *self._json_headers.raw])
        self._host_empty_headers = httpx.Headers(
            [(b"Host", self._netloc), (b"Content-Length", b"0"), *self._headers.raw]
        )

    def own_url(self, absolute_url: str) -> httpx.URL:
        """A URL the API handed out (a Link next page), refused unless on the base URL's
        origin: the token never travels elsewhere."""
        url = httpx.URL(absolute_url)
        if not self.same_origin(url):
            raise PermanentApiError(
                self.service,
                f"refusing to follow a link to another host ({url.host or 'no host'})",
                method="GET",
            )
        return url

    def same_origin(self, url: httpx.URL) -> bool:
        return (url.scheme, url.host, url.port) == (
            self.base_url.scheme,
            self.base_url.host,
            self.base_url.port,
        )

    def url(self, target: str | httpx.URL, query: Mapping[str, Any] | None) -> httpx.URL:
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

    def request(self, method: str, url: httpx.URL, content: bytes | None) -> httpx.Request:
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

    def redirect(self, request: httpx.Request, response: httpx.Response) -> httpx.Request:
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
        if not self.same_origin(url):
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
