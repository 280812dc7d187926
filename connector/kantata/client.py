"""The Kantata OX client: invoice pages in, external-reference write-backs out.

It returns Kantata's raw bodies (results order plus id-keyed maps, floats as `Decimal`); turning
them into typed records is `mappings.kantata`'s job. Paging is `order=id:asc` over a lower bound
fixed for the whole scan, so rows updated mid-scan keep their place and new rows come at the end.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import httpx
import msgspec

from connector.errors import NotFoundError, PermanentApiError, TransientApiError
from connector.http import DEFAULT_MAX_BODY_BYTES, ApiStats, ApiTransport, RetryPolicy
from connector.http.server_time import server_time
from connector.kantata.paging import (
    KantataPage,
    highest_id,
    page_count_of,
    paging_verdict,
    total_count,
)

__all__ = [
    "INVOICE_INCLUDES",
    "ExternalReferenceWrite",
    "KantataClient",
    "format_timestamp",
]

SERVICE = "kantata"
DEFAULT_BASE_URL = "https://api.mavenlink.com/api/v1"
MAX_PER_PAGE = 200
INVOICE_INCLUDES = (
    "time_entries",
    "expenses",
    "additional_items",
    "fixed_fee_items",
    "billing_milestones",
    "workspaces",
    "recipient",
    "external_references",
)
REFERENCE_STATUSES = frozenset({"pending", "successful", "failed"})
REFERENCE_UPSERT_PATH = "/external_references/create_or_update"
REFERENCE_UPSERT = f"POST {REFERENCE_UPSERT_PATH}"
"""The write-back's endpoint, as request statistics name it."""


@dataclass(frozen=True)
class ExternalReferenceWrite:
    """The external reference the connector writes onto a Kantata invoice."""

    service_name: str
    service_model: str
    service_model_ref: str
    status: str  # pending | successful | failed
    external_link: str | None = None
    external_message: str | None = None
    external_status: str | None = None

    def __post_init__(self) -> None:
        if self.status not in REFERENCE_STATUSES:
            raise ValueError(
                f"external reference status must be one of {sorted(REFERENCE_STATUSES)}"
            )
        for name in ("service_name", "service_model", "service_model_ref"):
            if not getattr(self, name):
                raise ValueError(f"external reference {name} must not be empty")

    def as_dict(self) -> dict[str, str | None]:
        """Every field, as `dataclasses.asdict` gives them (they are all strings or None)."""
        return {name: getattr(self, name) for name in _REFERENCE_FIELDS}

    def to_body(self) -> dict[str, str]:
        """The fields to send: every field that is set, nothing else."""
        return {
            name: value for name in _REFERENCE_FIELDS if (value := getattr(self, name)) is not None
        }


_REFERENCE_FIELDS = tuple(f.name for f in fields(ExternalReferenceWrite))


def format_timestamp(moment: datetime, *, round_up: bool = False) -> str:
    """UTC ISO 8601 to the second with a `Z`, e.g. `2024-03-01T10:00:00Z`.

    Kantata filters take whole seconds; a fraction is dropped for lower bounds (the window
    widens, never narrows) and rounded up for upper bounds (`round_up=True`) for the same reason.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timestamps sent to Kantata must be timezone-aware")
    utc = moment.astimezone(UTC)
    if round_up and utc.microsecond:
        utc = utc.replace(microsecond=0) + timedelta(seconds=1)
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def _invoice_path(invoice_id: str) -> str:
    text = str(invoice_id).strip()
    if not text.isdigit():
        raise ValueError(f"Kantata invoice id must be numeric, got {invoice_id!r}")
    return f"/invoices/{text}.json"


def _malformed(what: str, page: int | None = None) -> TransientApiError:
    where = f" {page}" if page is not None else ""
    return TransientApiError(
        SERVICE, f"malformed page{where}: {what}", method="GET", path="/invoices.json"
    )


class KantataClient:
    """Kantata OX API v1 over one paced, retrying transport. Safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        rate: float | None,
        retry: RetryPolicy,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "kantata-sync/0.1",
        burst: int = 1,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
        max_body: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if not token:
            raise ValueError("Kantata token is empty")
        self._http = ApiTransport(
            SERVICE,
            base_url,
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": user_agent,
            },
            rate=rate,
            burst=burst,
            retry=retry,
            timeout=timeout,
            transport=transport,
            sleep=sleep,
            clock=clock,
            stop=stop,
            max_body=max_body,
        )

    def __repr__(self) -> str:
        return f"KantataClient(base_url={str(self._http.base_url)!r})"

    @property
    def stats(self) -> ApiStats:
        return self._http.stats

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- invoices -----------------------------------------------------------------------------

    def iter_invoice_pages(
        self,
        *,
        updated_after: datetime | None,
        per_page: int = MAX_PER_PAGE,
        updated_before: datetime | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Iterator[KantataPage]:
        """Every page of `GET /invoices.json` in `id:asc` order, with all line associations.

        A server may serve fewer rows a page than asked for, and `meta.page_count` may be
        wrong, so neither a short page nor `page_count` alone ends the scan. It ends when the
        signals agree: an empty page, or as many rows received as Kantata's `count` with the
        last page by `page_count` read (or no `page_count` given). When they disagree, the scan
        reads on and says so in the page's `note`. A last page that leaves rows of `count`
        unserved, or a server that serves no new rows, ends the scan with `unseen` set.
        `extra` adds filters (e.g. `without_drafts`); it cannot change order, includes or paging.
        """
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}")
        params: dict[str, Any] = dict(extra or {})
        if updated_after is not None:
            params["updated_after"] = format_timestamp(updated_after)
        if updated_before is not None:
            params["updated_before"] = format_timestamp(updated_before, round_up=True)
        params.update(
            order="id:asc",
            include=",".join(INVOICE_INCLUDES),
            per_page=per_page,
        )
        page = 1
        received = 0
        highest: int | None = None
        while True:
            params["page"] = page
            response, body = self._http.request_json_response(
                "GET", "/invoices.json", params=params
            )
            results = self._results(body, page)
            page_count = page_count_of(body)
            count = total_count(body)
            received += len(results)
            page_highest = highest_id(results)
            stalled = (
                bool(results)
                and highest is not None
                and page_highest is not None
                and page_highest <= highest
            )
            if page_highest is not None and (highest is None or page_highest > highest):
                highest = page_highest
            last, note, unseen = paging_verdict(
                page=page,
                rows=len(results),
                per_page=per_page,
                received=received,
                count=count,
                page_count=page_count,
                stalled=stalled,
            )
            yield KantataPage(
                body=body,
                page=page,
                count=count if count is not None else received,
                page_count=page_count,
                server_time=server_time(response),
                note=note,
                unseen=unseen,
            )
            if last:
                return
            page += 1

    def get_invoices(self, ids: Sequence[str]) -> dict[str, Any]:
        """The invoices with these ids (missing ones are simply absent), as one merged body.

        Asked for in chunks of 200 with `only=`; results keep the order of the chunks, the
        id-keyed maps are merged, `count` is the number of results.
        """
        wanted = list(dict.fromkeys(str(i).strip() for i in ids))
        for invoice_id in wanted:
            _invoice_path(invoice_id)  # validates
        merged: dict[str, Any] = {"count": 0, "results": []}
        for start in range(0, len(wanted), MAX_PER_PAGE):
            chunk = wanted[start : start + MAX_PER_PAGE]
            body = self._http.request_json(
                "GET",
                "/invoices.json",
                params={
                    "only": ",".join(chunk),
                    "include": ",".join(INVOICE_INCLUDES),
                    "per_page": MAX_PER_PAGE,
                },
            )
            merged["results"].extend(self._results(body, None))
            for key, value in body.items():
                if isinstance(value, dict) and key != "meta":
                    merged.setdefault(key, {}).update(value)
        merged["count"] = len(merged["results"])
        return merged

    def write_external_reference(
        self, invoice_id: str, ref: ExternalReferenceWrite, *, replace: str | None = None
    ) -> None:
        """Create or update our external reference on an invoice, by the documented upsert
        (`POST /external_references/create_or_update`): one request.

        The documents do not say whether the upsert may change a reference's
        `service_model_ref` (a new Noko id) or how it finds the one to update, and the
        nested `external_reference` of `PUT /invoices/{id}` is documented for adding one,
        not for rewriting it. So a reference of ours that names another object is removed
        first (`DELETE /external_references/{id}`): `replace` is its id when the caller
        knows it. When the caller does not and Kantata refuses the upsert (422), the
        invoice's references of this service are read, those naming another object
        removed, and the upsert sent once more. The answer must be a JSON object; nothing
        in it is read.
        """
        _invoice_path(invoice_id)  # validates
        if replace is not None:
            with contextlib.suppress(PermanentApiError):
                # Refused (not merely gone): the upsert may still re-point the reference;
                # if it does not either, its own error is the one reported.
                self.delete_external_reference(replace)
        try:
            self._create_or_update(invoice_id, ref)
        except PermanentApiError as exc:
            if exc.status != 422 or replace is not None:
                raise
            stale = [
                other["id"]
                for other in self.list_external_references(invoice_id, ref.service_name)
                if other.get("service_model_ref") != ref.service_model_ref
                or other.get("service_model") != ref.service_model
            ]
            if not stale:
                raise
            for ref_id in stale:
                self.delete_external_reference(ref_id)
            self._create_or_update(invoice_id, ref)

    def _create_or_update(self, invoice_id: str, ref: ExternalReferenceWrite) -> None:
        body = {
            "external_reference": {
                "subject_type": "Invoice",
                "subject_id": int(invoice_id),
                **ref.to_body(),
            }
        }
        self._http.request_typed(
            "POST", REFERENCE_UPSERT_PATH, _ANY_OBJECT, body=body, idempotent=True
        )

    def delete_external_reference(self, reference_id: str) -> None:
        """`DELETE /external_references/{id}`; one already gone (404) is no error."""
        text = str(reference_id).strip()
        if not text.isdigit():
            raise ValueError(f"Kantata external reference id must be numeric, got {reference_id!r}")
        try:
            self._http.request("DELETE", f"/external_references/{text}")
        except NotFoundError:
            return

    def list_external_references(self, invoice_id: str, service_name: str) -> list[dict[str, Any]]:
        """The invoice's external references of one service (`GET /external_references`)."""
        _invoice_path(invoice_id)  # validates
        body = self._http.request_json(
            "GET",
            "/external_references",
            params={
                "subject_type": "Invoice",
                "subject_id": str(invoice_id).strip(),
                "service_name": service_name,
                "per_page": MAX_PER_PAGE,
            },
        )
        results = self._results(body, None)
        records = body.get("external_references") if isinstance(body, dict) else None
        if not isinstance(records, Mapping):
            records = {}
        found: list[dict[str, Any]] = []
        for result in results:
            ref_id = str(result.get("id")) if isinstance(result, Mapping) else ""
            record = records.get(ref_id)
            if ref_id.isdigit() and isinstance(record, Mapping):
                if str(record.get("service_name")) != service_name:
                    continue  # the filter is the server's; check it
                found.append(
                    {
                        "id": ref_id,
                        "service_model": _text(record.get("service_model")),
                        "service_model_ref": _text(record.get("service_model_ref")),
                    }
                )
        return found

    def record_external_payment(self, invoice_id: str, workspace_id: str) -> dict[str, Any]:
        """Record a payment in full made outside Kantata (`POST /external_payments`).

        A payment naming an invoice is recorded by Kantata for the invoice's whole balance
        (it ignores `amount_in_cents` then), so none is sent: the connector records payments
        in full only. Not idempotent: the caller makes sure it happens once per invoice."""
        body = {
            "external_payment": {
                "invoice_id": int(invoice_id),
                "workspace_id": int(workspace_id),
            }
        }
        decoded = self._http.request_json("POST", "/external_payments.json", body=body)
        if not isinstance(decoded, dict):
            raise TransientApiError(
                SERVICE, "unexpected response", method="POST", path="/external_payments.json"
            )
        return decoded

    def current_user(self) -> dict[str, Any]:
        """The token's user (`GET /users/me.json`), to check credentials."""
        body = self._http.request_json("GET", "/users/me.json")
        if not isinstance(body, dict):
            raise TransientApiError(
                SERVICE, "unexpected response", method="GET", path="/users/me.json"
            )
        return body

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _results(body: Any, page: int | None) -> list[Any]:
        if not isinstance(body, dict):
            raise _malformed(f"body is {type(body).__name__}, not an object", page)
        results = body.get("results")
        if not isinstance(results, list):
            raise _malformed("no results list", page)
        return results


class _AnyObject(msgspec.Struct):
    """A JSON object, whatever it holds: its members are skipped, not decoded."""


_ANY_OBJECT = msgspec.json.Decoder(_AnyObject)


def _text(value: Any) -> str | None:
    """A reference field as Kantata sent it, ids compared as text (None when absent)."""
    if value is None or isinstance(value, bool):
        return None
    return str(value)
