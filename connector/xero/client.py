"""The Xero Accounting API client: pacing, limits, token renewal, batches and look-ups.

Every call sends `Accept: application/json` and `xero-tenant-id` (the tenant comes from
`GET /connections` when not configured: exactly one organisation is required). Calls are paced
to 60 a minute with at most 5 in flight. A 429 pauses every Xero call of the process until its
`Retry-After` has passed; a 429 for the day limit raises `XeroDailyLimitReached` with the time
Xero announced. A 401 `TokenExpired` gets a new token and repeats the call once; a fresh token
refused raises `XeroAuthError`.

Writes go 50 documents to a request with `summarizeErrors=false` and an `Idempotency-Key` that
is the sha256 of the method, path and canonical body, so one key always names one body. A write
whose answer was lost is never sent again blind: the batch's references are looked up first
(`createdByMyApp=true`), what exists is returned as found, only the rest is sent again (a new
body, so a new key).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from connector.errors import (
    AmbiguousWriteError,
    ConfigError,
    NotFoundError,
    PermanentApiError,
    TransientApiError,
)
from connector.http import TokenBucket, decode_json, encode_json, parse_retry_after
from connector.xero.auth import TokenSource, XeroAuthError
from mappings.canonical import canonical_json

log = structlog.get_logger(__name__)

BASE_URL = "https://api.xero.com/api.xro/2.0"
CONNECTIONS_URL = "https://api.xero.com/connections"
BATCH = 50
PAGE = 1000
MAX_429 = 20
OR_LOOKUP = 50
"""References per `where` of OR-ed clauses; more than this lists all of ours instead."""
LIVE = ("DRAFT", "SUBMITTED", "AUTHORISED", "PAID")
_SAFE_TO_RESEND = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class XeroDailyLimitReached(TransientApiError):
    """Xero's day limit for this organisation is spent: end the cycle cleanly, try again
    (one call) on the next one whatever `resume_at` says."""

    def __init__(self, resume_at: datetime, *, path: str = "") -> None:
        self.resume_at = resume_at
        super().__init__(
            "xero",
            f"Xero's daily limit reached; resumes after {resume_at:%Y-%m-%d %H:%M:%S} UTC",
            status=429,
            path=path,
            retry_after=None,
        )


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
class XeroResult:
    """One document of a batch: `document` as Xero stored it, or its validation `errors`."""

    payload: Mapping[str, Any]
    document: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    looked_up: bool = False
    """True when the answer was lost and the document was found by its reference."""

    @property
    def ok(self) -> bool:
        return self.document is not None and not self.errors


@dataclass
class Limits:
    minute_remaining: int | None = None
    day_remaining: int | None = None


def idempotency_key(method: str, path: str, body: Mapping[str, Any]) -> str:
    """The key of one request body: the same body always gets the same key, any other never."""
    blob = method.encode() + b" " + path.encode() + b"\n" + canonical_json(body, str)
    return hashlib.sha256(blob).hexdigest()


def deep_link(short_code: str, invoice_id: str) -> str:
    """The documented deep link into the organisation (xero.md §8)."""
    return (
        "https://go.xero.com/organisationlogin/default.aspx?shortcode="
        f"{short_code}&redirecturl=/AccountsReceivable/View.aspx?InvoiceID={invoice_id}"
    )


class XeroClient:
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
        on_request: Callable[[httpx.Request], None] | None = None,
    ) -> None:
        self.tokens = tokens
        self.base_url = base_url.rstrip("/")
        self.connections_url = connections_url
        self.tenant_id = tenant_id
        self._http = http or httpx.Client(timeout=60.0)
        self._gate = gate or PROCESS_GATE
        self._bucket = TokenBucket(per_minute / 60.0, 1, clock=clock, sleep=sleep)
        self._flight = threading.BoundedSemaphore(max(1, concurrent))
        self._sleep = sleep
        self._wall = wall
        self._max_attempts = max_attempts
        self._on_request = on_request
        self.limits = Limits()
        self.requests = 0

    def __repr__(self) -> str:
        return f"XeroClient(base_url={self.base_url!r}, tenant_id={self.tenant_id!r})"

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
            sent = {"Accept": "application/json", **(headers or {})}
            if absolute is None:
                sent["xero-tenant-id"] = self.tenant()
            if content is not None:
                sent["Content-Type"] = "application/json"
            sent["Authorization"] = "Bearer " + self.tokens.access_token()
            request = self._http.build_request(
                method, url, params=params, content=content, headers=sent
            )
            if self._on_request is not None:
                self._on_request(request)
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

    # ----- tenant and settings -----------------------------------------------------------------
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

    def organisation(self) -> dict[str, Any]:
        return dict(self._call("GET", "/Organisation")["Organisations"][0])

    def accounts(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/Accounts")["Accounts"])

    def tax_rates(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/TaxRates")["TaxRates"])

    # ----- reads ------------------------------------------------------------------------------
    def _pages(
        self, collection: str, params: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = self._call(
                "GET",
                f"/{collection}",
                params={**params, "page": page, "pageSize": PAGE},
                headers=headers,
            )
            rows = answer.get(collection) or []
            out.extend(rows)
            if len(rows) < PAGE:
                return out
            page += 1

    def find_by_references(
        self, references: Iterable[str], collection: str = "Invoices"
    ) -> dict[str, list[dict[str, Any]]]:
        """Our documents by `Reference` (exact match): OR-ed `where` clauses for a few, one
        listing of all of ours (1,000 a page) for many."""
        wanted = list(dict.fromkeys(references))
        found: dict[str, list[dict[str, Any]]] = {ref: [] for ref in wanted}
        if not wanted:
            return found
        mine = {"createdByMyApp": "true"} if collection == "Invoices" else {}
        if len(wanted) <= OR_LOOKUP:
            where = " OR ".join(f'Reference=="{_quoted(ref)}"' for ref in wanted)
        else:
            prefix = _common_prefix(wanted)
            where = f'Reference.StartsWith("{prefix}")' if prefix else ""
        params = {**mine, **({"where": where} if where else {})}
        for row in self._pages(collection, params):
            ref = row.get("Reference")
            if ref in found:
                found[ref].append(row)
        return found

    def changed_since(self, since: datetime, collection: str = "Invoices") -> list[dict[str, Any]]:
        """Our documents created or changed since `since` (one request per 1,000)."""
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        mine = {"createdByMyApp": "true"} if collection == "Invoices" else {}
        return self._pages(collection, mine, headers={"If-Modified-Since": stamp})

    # ----- writes -----------------------------------------------------------------------------
    def _write_batch(
        self, method: str, collection: str, elements: Sequence[Mapping[str, Any]]
    ) -> list[XeroResult]:
        body = {collection: list(elements)}
        key = idempotency_key(method, f"/{collection}", body)
        answer = self._call(
            method,
            f"/{collection}",
            params={"summarizeErrors": "false"},
            body=body,
            headers={"Idempotency-Key": key},
        )
        rows = answer.get(collection) or []
        if len(rows) != len(elements):
            raise PermanentApiError(
                "xero",
                f"{len(rows)} answers for {len(elements)} documents",
                method=method,
                path=f"/{collection}",
            )
        results = []
        for element, row in zip(elements, rows, strict=True):
            errors = [str(e.get("Message", e)) for e in row.get("ValidationErrors") or []]
            if row.get("HasErrors") and not errors:
                errors = ["Xero reported an error without a message"]
            results.append(XeroResult(element, None if errors else row, errors))
        return results

    def save(
        self, method: str, collection: str, payloads: Sequence[Mapping[str, Any]]
    ) -> list[XeroResult]:
        """PUT (create) or POST (update) documents, 50 to a request, one result per payload,
        in order. A batch whose answer was lost is looked up by reference before a resend."""
        results: list[XeroResult] = []
        for start in range(0, len(payloads), BATCH):
            results.extend(
                self._save_resolving(method, collection, list(payloads[start : start + BATCH]))
            )
        return results

    def _save_resolving(
        self, method: str, collection: str, chunk: list[Mapping[str, Any]]
    ) -> list[XeroResult]:
        by_position: dict[int, XeroResult] = {}
        pending = list(range(len(chunk)))
        for _round in range(3):
            try:
                for pos, result in zip(
                    pending,
                    self._write_batch(method, collection, [chunk[i] for i in pending]),
                    strict=True,
                ):
                    by_position[pos] = result
                return [by_position[i] for i in range(len(chunk))]
            except AmbiguousWriteError:
                log.warning("xero.batch_in_doubt", collection=collection, size=len(pending))
                refs = [str(chunk[i].get("Reference", "")) for i in pending]
                found = self.find_by_references([r for r in refs if r], collection)
                still = []
                for pos, ref in zip(pending, refs, strict=True):
                    match = _applied(chunk[pos], found.get(ref, []), method)
                    if match is not None:
                        by_position[pos] = XeroResult(chunk[pos], match, [], looked_up=True)
                    else:
                        still.append(pos)
                pending = still
                if not pending:
                    return [by_position[i] for i in range(len(chunk))]
        raise AmbiguousWriteError(
            "xero", "answers lost three times in a row", method=method, path=f"/{collection}"
        )

    def create_invoices(self, payloads: Sequence[Mapping[str, Any]]) -> list[XeroResult]:
        return self.save("PUT", "Invoices", payloads)

    def update_invoices(self, payloads: Sequence[Mapping[str, Any]]) -> list[XeroResult]:
        return self.save("POST", "Invoices", payloads)

    def create_credit_notes(self, payloads: Sequence[Mapping[str, Any]]) -> list[XeroResult]:
        return self.save("PUT", "CreditNotes", payloads)

    def update_credit_notes(self, payloads: Sequence[Mapping[str, Any]]) -> list[XeroResult]:
        return self.save("POST", "CreditNotes", payloads)

    def set_status(
        self, collection: str, changes: Sequence[tuple[str, str, str]]
    ) -> list[XeroResult]:
        """(id, reference, status) -> POST `{"<ID field>": id, "Reference": ref, "Status": s}`:
        approve (AUTHORISED), delete (DELETED) or void (VOIDED), 50 to a request."""
        id_field = "CreditNoteID" if collection == "CreditNotes" else "InvoiceID"
        payloads = [{id_field: i, "Reference": ref, "Status": s} for i, ref, s in changes]
        return self.save("POST", collection, payloads)

    def approve(self, collection: str, docs: Sequence[tuple[str, str]]) -> list[XeroResult]:
        """(id, reference) -> AUTHORISED: after the drafts' totals were verified."""
        return self.set_status(collection, [(i, ref, "AUTHORISED") for i, ref in docs])

    def cancel(self, collection: str, docs: Sequence[tuple[str, str, str]]) -> list[XeroResult]:
        """(id, reference, current status) -> DELETED for DRAFT/SUBMITTED, VOIDED for
        AUTHORISED. Paid documents are refused by Xero and come back with its message."""
        changes = [
            (i, ref, "VOIDED" if status == "AUTHORISED" else "DELETED") for i, ref, status in docs
        ]
        return self.set_status(collection, changes)

    # ----- contacts ---------------------------------------------------------------------------
    def contacts_for(self, clients: Sequence[tuple[str | None, str]]) -> dict[str, str]:
        """ContactID per client (key: the client id, else the name): found by ContactNumber,
        then by name (case-insensitive), else created (50 to a request)."""
        rows = self._pages("Contacts", {})
        by_number = {r.get("ContactNumber"): r for r in rows if r.get("ContactNumber")}
        by_name = {str(r.get("Name", "")).lower(): r for r in rows}
        out: dict[str, str] = {}
        missing: dict[str, dict[str, Any]] = {}
        for client_id, name in clients:
            key = client_id or name
            row = by_number.get(client_id) if client_id else None
            row = row or by_name.get(name.lower())
            if row is not None:
                out[key] = str(row["ContactID"])
            elif key not in missing and name.lower() not in {
                m["Name"].lower() for m in missing.values()
            }:
                body: dict[str, Any] = {"Name": name}
                if client_id:
                    body["ContactNumber"] = client_id[:50]
                missing[key] = body
        if missing:
            keys = list(missing)
            try:
                results = self.save("PUT", "Contacts", [missing[k] for k in keys])
            except AmbiguousWriteError:
                return self.contacts_for(clients)  # a re-list finds what was made
            for key, result in zip(keys, results, strict=True):
                if result.ok and result.document is not None:
                    out[key] = str(result.document["ContactID"])
        for client_id, name in clients:  # a second client of a name just created
            key = client_id or name
            if key not in out:
                twin = next(
                    (k for k, b in missing.items() if b["Name"].lower() == name.lower()), None
                )
                if twin is not None and twin in out:
                    out[key] = out[twin]
        return out


def _applied(
    payload: Mapping[str, Any], found: list[dict[str, Any]], method: str
) -> dict[str, Any] | None:
    """The document a lost write produced, if it did."""
    id_field = (
        "CreditNoteID"
        if "CreditNoteID" in payload or payload.get("Type") == "ACCRECCREDIT"
        else "InvoiceID"
    )
    wanted_id = payload.get(id_field)
    if wanted_id:
        for doc in found:
            if doc.get(id_field) == wanted_id and (
                "Status" not in payload
                or doc.get("Status") == payload["Status"]
                or (payload["Status"] == "AUTHORISED" and doc.get("Status") == "PAID")
            ):
                if "LineItems" in payload and method == "POST":
                    return None  # an edit's effect cannot be told by status: resend it
                return doc
        return None
    live = [doc for doc in found if doc.get("Status") in LIVE]
    return live[0] if live else None


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _common_prefix(values: Sequence[str]) -> str:
    first = values[0]
    length = len(first)
    for value in values[1:]:
        while not value.startswith(first[:length]):
            length -= 1
    return _quoted(first[:length])


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
