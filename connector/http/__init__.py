"""The HTTP boundary: pacing, retries and error translation for every API call.

Everything above this module sees decoded JSON (floats as `Decimal`) or one of the typed errors
of `connector.errors`; nothing above it retries a single request. The rules, in one place:

- Every attempt (and every redirect hop) first takes a token from the `TokenBucket`.
- Idempotent requests (GET, PUT, DELETE, HEAD by default) are retried on 429, 408, 5xx, timeouts,
  dropped connections and 2xx bodies that are not JSON.
- Non-idempotent requests (POST) are retried only when the request cannot have been applied
  (429, 408, connect errors, pool timeouts). Any other failure after sending raises
  `AmbiguousWriteError` at once: the caller looks the object up by its natural key instead.
- Other 4xx raise `PermanentApiError` (404: `NotFoundError`) with the API's own message.
- Tokens live only in request headers and in a redaction list; they never reach a log line,
  an exception message or a repr.
"""

from __future__ import annotations

from connector.http.codec import decode_json, decode_typed, encode_json
from connector.http.error_bodies import describe_error_body
from connector.http.paced import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    PacedTransport,
    ResponseTooLargeError,
    StoppedError,
)
from connector.http.pacing import TokenBucket
from connector.http.retry import RetryPolicy, parse_retry_after
from connector.http.stats import ApiStats, endpoint_template
from connector.http.transport import BODY_SNIPPET, IDEMPOTENT_METHODS, MAX_REDIRECTS, ApiTransport

__all__ = [
    "BODY_SNIPPET",
    "DEFAULT_MAX_BODY_BYTES",
    "IDEMPOTENT_METHODS",
    "MAX_HEADER_BYTES",
    "MAX_REDIRECTS",
    "ApiStats",
    "ApiTransport",
    "PacedTransport",
    "ResponseTooLargeError",
    "RetryPolicy",
    "StoppedError",
    "TokenBucket",
    "decode_json",
    "decode_typed",
    "describe_error_body",
    "encode_json",
    "endpoint_template",
    "parse_retry_after",
]
