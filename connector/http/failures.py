"""One failed attempt, before the retry decision, and the typed error it becomes: an HTTP status
read (with the API's own words from the body) as retryable, permanent or possibly applied."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from connector.errors import (
    AmbiguousWriteError,
    ApiError,
    AuthError,
    NotFoundError,
    PermanentApiError,
    TransientApiError,
)
from connector.http.codec import decode_json
from connector.http.error_bodies import describe_error_body
from connector.http.retry import parse_retry_after


class _RedirectRefused(Exception):
    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


@dataclass
class _Failure:
    """One failed attempt, before the retry decision."""

    message: str
    status: int | None = None
    request_id: str | None = None
    code: str | None = None
    retry_after: float | None = None
    retryable: bool = True  # False: a permanent refusal
    applied_maybe: bool = False  # the server may have acted on the request
    not_found: bool = False
    final: bool = False  # transient, but not retried now (a stop was requested)


def status_failure(response: httpx.Response, clean: Callable[[str], str]) -> _Failure | None:
    status = response.status_code
    if 200 <= status < 300:
        return None
    request_id = response.headers.get("x-request-id")
    message, code = _error_text(response, clean)
    failure = _Failure(message, status=status, request_id=request_id, code=code)
    if status in (408, 429):
        # The server refused before acting: repeating is safe for any method.
        failure.retry_after = parse_retry_after(response.headers.get("retry-after"))
    elif status >= 500:
        failure.retry_after = parse_retry_after(response.headers.get("retry-after"))
        failure.applied_maybe = True
    else:
        failure.retryable = False
        failure.not_found = status == 404
    return failure


def _error_text(response: httpx.Response, clean: Callable[[str], str]) -> tuple[str, str | None]:
    reason = response.reason_phrase or "error"
    if not response.content.strip():
        return reason if response.status_code != 429 else "rate limited", None
    try:
        body = decode_json(response.content)
    except (ValueError, UnicodeDecodeError):
        content_type = response.headers.get("content-type", "no content type")
        text = response.content.decode("utf-8", errors="replace")
        return clean(f"{reason} ({content_type}): {text}"), None
    message, code = describe_error_body(body)
    if message is None:
        return clean(f"{reason}: {response.text}"), code
    return clean(message), code


def api_error(
    service: str,
    failure: _Failure,
    method: str,
    template: str,
    *,
    ambiguous: bool = False,
    retry_after: float | None = None,
) -> ApiError:
    path = template.split(" ", 1)[1]
    common: dict[str, Any] = {
        "status": failure.status,
        "method": method,
        "path": path,
        "request_id": failure.request_id,
        "code": failure.code,
    }
    if ambiguous:
        return AmbiguousWriteError(
            service,
            f"{failure.message}; the request may have been applied",
            retry_after=failure.retry_after,
            **common,
        )
    if not failure.retryable:
        kind: type[PermanentApiError] | type[AuthError] = PermanentApiError
        if failure.not_found:
            kind = NotFoundError
        elif failure.status in (401, 403):
            kind = AuthError
        return kind(service, failure.message, **common)
    return TransientApiError(
        service,
        failure.message,
        retry_after=failure.retry_after if failure.retry_after is not None else retry_after,
        **common,
    )
