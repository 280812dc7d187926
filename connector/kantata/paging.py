"""Kantata's invoice paging, read without a server: the page a scan yields, and the verdict on
each page's signals (`count`, `meta.page_count`, short or empty pages, a stalled server)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["KantataPage", "highest_id", "page_count_of", "paging_verdict", "total_count"]


@dataclass(frozen=True)
class KantataPage:
    """One page of `GET /invoices`: the raw body, its 1-based number, the query's total count
    (Kantata's top-level `count`) and `meta.page_count` when given."""

    body: dict[str, Any]
    page: int
    count: int
    page_count: int | None
    server_time: datetime | None = None
    """Kantata's clock when it answered (its `Date` header), if it said."""
    note: str | None = None
    """Set when the paging signals of this page disagree (a short page while `count` says
    more, a `page_count` that ends before `count` is reached, ...): what was seen and what the
    scan does about it."""
    unseen: int = 0
    """On the last page of a scan: how many rows Kantata's `count` promised that were never
    served. Nonzero means the scan is incomplete, and nothing read may move a cursor."""


def paging_verdict(
    *,
    page: int,
    rows: int,
    per_page: int,
    received: int,
    count: int | None,
    page_count: int | None,
    stalled: bool,
) -> tuple[bool, str | None, int]:
    """(is this the last page, a note when the signals disagree, rows promised but unseen)."""
    missing = 0 if count is None else max(count - received, 0)
    if stalled:
        return (
            True,
            f"page {page} served only invoices already read: the server does not page on; "
            f"{received} rows received of {count if count is not None else 'an unknown count'}",
            max(missing, 1),
        )
    if rows == 0:
        if missing:
            return (
                True,
                f"page {page} is empty, yet Kantata counts {count} invoices and "
                f"{received} were served",
                missing,
            )
        return True, None, 0
    if count is None:
        return False, None, 0  # only an empty page can end the scan
    if received >= count:
        if page_count is None or page >= page_count:
            return True, None, 0
        return (
            False,
            f"all {count} counted invoices received by page {page}, but meta.page_count says "
            f"{page_count}: reading on",
            0,
        )
    if page_count is not None and page >= page_count:
        return (
            False,
            f"meta.page_count says {page_count} pages, but {received} of {count} invoices "
            "were received: reading on",
            0,
        )
    if rows < per_page:
        return (
            False,
            f"page {page} held {rows} invoices, fewer than the {per_page} asked for, but "
            f"{received} of {count} were received: reading on",
            0,
        )
    return False, None, 0


def total_count(body: Mapping[str, Any]) -> int | None:
    """Kantata's total for the query: the top-level `count`, else `meta.count`."""
    meta = body.get("meta")
    for value in (body.get("count"), meta.get("count") if isinstance(meta, Mapping) else None):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def highest_id(results: Sequence[Any]) -> int | None:
    """The highest numeric id among a page's results (None when there is none)."""
    highest: int | None = None
    for result in results:
        raw = result.get("id") if isinstance(result, Mapping) else None
        text = str(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
        if text.isdigit():
            value = int(text)
            if highest is None or value > highest:
                highest = value
    return highest


def page_count_of(body: Mapping[str, Any]) -> int | None:
    meta = body.get("meta")
    if not isinstance(meta, Mapping):
        return None
    value = meta.get("page_count")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
