"""The Xero Accounting API client: settings, look-ups, batched writes, contacts.

Writes go 50 documents to a request with `summarizeErrors=false` and an `Idempotency-Key` that
is the sha256 of the method, path and canonical body, so one key always names one body. A write
whose answer was lost is never sent again blind: the batch's references are looked up first
(`createdByMyApp=true`), what exists is returned as found, only the rest is sent again (a new
body, so a new key). The request loop (pacing, limits, tokens, errors) is `transport`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from connector.errors import AmbiguousWriteError, NotFoundError, PermanentApiError
from connector.targets.xero.transport import (
    BASE_URL,
    CONNECTIONS_URL,
    PROCESS_GATE,
    Limits,
    PauseGate,
    XeroDailyLimitReached,
    XeroTransport,
)
from mappings.canonical import canonical_json

__all__ = [
    "BASE_URL",
    "CONNECTIONS_URL",
    "PROCESS_GATE",
    "Limits",
    "PauseGate",
    "XeroClient",
    "XeroDailyLimitReached",
    "XeroResult",
    "deep_link",
    "idempotency_key",
]

log = structlog.get_logger(__name__)

BATCH = 50
PAGE = 1000
OR_LOOKUP = 50
"""References per `where` of OR-ed clauses; more than this lists all of ours instead."""
LIVE = ("DRAFT", "SUBMITTED", "AUTHORISED", "PAID")


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


def idempotency_key(method: str, path: str, body: Mapping[str, Any], version: str = "") -> str:
    """The key of one request body: the same body always gets the same key, any other never.

    `version` names what the body is sent against (the documents' `UpdatedDateUTC`, the ids
    already made for the references): the same body sent again to changed documents (an
    edit back to an earlier version, an approval after a refused one, a create after a
    discard) gets a new key, so a key Xero remembers cannot answer it with a stale result."""
    blob = method.encode() + b" " + path.encode() + b"\n" + canonical_json(body, str)
    if version:
        blob += b"\n" + version.encode()
    return hashlib.sha256(blob).hexdigest()


def deep_link(short_code: str, invoice_id: str, *, credit_note: bool = False) -> str:
    """The documented deep link into the organisation (xero.md §8)."""
    page = (
        f"ViewCreditNote.aspx?creditNoteID={invoice_id}"
        if credit_note
        else f"View.aspx?InvoiceID={invoice_id}"
    )
    return (
        "https://go.xero.com/organisationlogin/default.aspx?shortcode="
        f"{short_code}&redirecturl=/AccountsReceivable/{page}"
    )


class XeroClient(XeroTransport):
    """Settings, reads, batched writes and contacts of one Xero organisation."""

    # ----- settings --------------------------------------------------------------------------
    def organisation(self) -> dict[str, Any]:
        return dict(self._call("GET", "/Organisation")["Organisations"][0])

    def accounts(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/Accounts")["Accounts"])

    def tax_rates(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/TaxRates")["TaxRates"])

    # ----- reads ------------------------------------------------------------------------------
    def _pages(
        self,
        collection: str,
        params: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        on_answer: Callable[[Mapping[str, Any]], None] | None = None,
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
            if on_answer is not None and isinstance(answer, Mapping):
                on_answer(answer)
            rows = answer.get(collection) or []
            out.extend(rows)
            pagination = answer.get("pagination")
            count = pagination.get("pageCount") if isinstance(pagination, Mapping) else None
            if len(rows) < PAGE or (isinstance(count, int) and page >= count):
                return out
            page += 1

    def get_document(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        """One invoice or credit note by id (with its lines), None when Xero has none."""
        try:
            answer = self._call("GET", f"/{collection}/{doc_id}")
        except NotFoundError:
            return None
        rows = answer.get(collection) or []
        return dict(rows[0]) if rows else None

    def invoices_by_ids(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Invoices by InvoiceID with their lines, 50 ids to a request (more fail at Xero)."""
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            answer = self._call(
                "GET",
                "/Invoices",
                params={"IDs": ",".join(chunk), "page": 1, "pageSize": BATCH},
            )
            out.extend(answer.get("Invoices") or [])
        return out

    def list_ours(
        self,
        collection: str,
        prefix: str,
        *,
        statuses: Sequence[str] = (),
        on_answer: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Our documents whose Reference starts with `prefix` (all of ours with ""), with their
        lines, 1,000 a request: invoices made by this app (`createdByMyApp`), credit notes by
        reference (Xero offers no such filter for them: the caller checks the markers)."""
        params: dict[str, Any] = {"createdByMyApp": "true"} if collection == "Invoices" else {}
        if prefix:
            params["where"] = f'Reference.StartsWith("{_quoted(prefix)}")'
        if statuses and collection == "Invoices":
            params["Statuses"] = ",".join(statuses)
        return self._pages(collection, params, on_answer=on_answer)

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

    def changed_since(
        self,
        since: datetime,
        collection: str = "Invoices",
        *,
        on_answer: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Our documents created or changed since `since` (one request per 1,000)."""
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        mine = {"createdByMyApp": "true"} if collection == "Invoices" else {}
        return self._pages(
            collection, mine, headers={"If-Modified-Since": stamp}, on_answer=on_answer
        )

    # ----- writes -----------------------------------------------------------------------------
    def _write_batch(
        self,
        method: str,
        collection: str,
        elements: Sequence[Mapping[str, Any]],
        version: str = "",
    ) -> list[XeroResult]:
        body = {collection: list(elements)}
        key = idempotency_key(method, f"/{collection}", body, version)
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
        self,
        method: str,
        collection: str,
        payloads: Sequence[Mapping[str, Any]],
        version: str = "",
    ) -> list[XeroResult]:
        """PUT (create) or POST (update) documents, 50 to a request, one result per payload,
        in order. A batch whose answer was lost is looked up by reference before a resend."""
        results: list[XeroResult] = []
        for start in range(0, len(payloads), BATCH):
            results.extend(
                self._save_resolving(
                    method, collection, list(payloads[start : start + BATCH]), version
                )
            )
        return results

    def _save_resolving(
        self, method: str, collection: str, chunk: list[Mapping[str, Any]], version: str = ""
    ) -> list[XeroResult]:
        by_position: dict[int, XeroResult] = {}
        pending = list(range(len(chunk)))
        for _round in range(3):
            try:
                for pos, result in zip(
                    pending,
                    self._write_batch(method, collection, [chunk[i] for i in pending], version),
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
        self, collection: str, changes: Sequence[tuple[str, str, str]], version: str = ""
    ) -> list[XeroResult]:
        """(id, reference, status) -> POST `{"<ID field>": id, "Reference": ref, "Status": s}`:
        approve (AUTHORISED), delete (DELETED) or void (VOIDED), 50 to a request."""
        id_field = "CreditNoteID" if collection == "CreditNotes" else "InvoiceID"
        payloads = [{id_field: i, "Reference": ref, "Status": s} for i, ref, s in changes]
        return self.save("POST", collection, payloads, version)

    def approve(
        self, collection: str, docs: Sequence[tuple[str, str]], version: str = ""
    ) -> list[XeroResult]:
        """(id, reference) -> AUTHORISED: after the drafts' totals were verified."""
        return self.set_status(collection, [(i, ref, "AUTHORISED") for i, ref in docs], version)

    def cancel(
        self, collection: str, docs: Sequence[tuple[str, str, str]], version: str = ""
    ) -> list[XeroResult]:
        """(id, reference, current status) -> DELETED for DRAFT/SUBMITTED, VOIDED for
        AUTHORISED. Paid documents are refused by Xero and come back with its message."""
        changes = [
            (i, ref, "VOIDED" if status == "AUTHORISED" else "DELETED") for i, ref, status in docs
        ]
        return self.set_status(collection, changes, version)

    # ----- contacts ---------------------------------------------------------------------------
    def list_contacts(self) -> list[dict[str, Any]]:
        """Every contact of the organisation, 1,000 a request."""
        return self._pages("Contacts", {})

    def contacts_for(
        self, clients: Sequence[tuple[str | None, str]], *, _rounds: int = 3
    ) -> dict[str, str]:
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
                if _rounds <= 1:
                    raise
                return self.contacts_for(clients, _rounds=_rounds - 1)  # a re-list finds them
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
    reference = str(payload.get("Reference") or "")
    live = [doc for doc in found if doc.get("Status") in LIVE and _marked(doc, reference)]
    return live[0] if live else None


def _marked(doc: Mapping[str, Any], reference: str) -> bool:
    """Whether a line of `doc` carries the marker `[<reference>/...]` a create of ours writes
    (credit notes have no `createdByMyApp` filter: a hand-made one is never taken for ours)."""
    if not reference:
        return True
    items = doc.get("LineItems")
    if not isinstance(items, list):
        return True  # a list without lines: `createdByMyApp` and the reference decide
    needle = f"[{reference}/"
    return any(
        needle in str(item.get("Description") or "") for item in items if isinstance(item, Mapping)
    )


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _common_prefix(values: Sequence[str]) -> str:
    first = values[0]
    length = len(first)
    for value in values[1:]:
        while not value.startswith(first[:length]):
            length -= 1
    return _quoted(first[:length])
