"""The time a server says it is, from the `Date` header of its response."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx


def server_time(response: httpx.Response) -> datetime | None:
    """The response's `Date` (RFC 9110, second precision) as an aware UTC datetime; None when
    it is missing or unreadable."""
    header = response.headers.get("date")
    if not header:
        return None
    try:
        moment = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
