"""The connector's documents in Xero: reading Xero's fields, and what this process has seen.

`neutral` adds the fields of `connector.targets.base` to a Xero invoice or credit note (`id` =
InvoiceID or CreditNoteID, `reference`, `state` = Xero's `Status`, `total_amount` signed as
Kantata's total (a credit note's is negative), `updated_at`, `paid`) and keeps Xero's own
fields beside them.

`Ours` is every document of ours the target read or wrote, kept in memory by collection, id
and reference. Once a collection was listed in full (by `find`, or before the first create),
that memory is the look-up before creating: one listing per 1,000 documents, not one per batch.
It stays complete because the connector's process is the only writer of our documents (the
state file's writer lock), every write's answer goes into it, a write left in doubt makes the
next create list again, and `changes_since` (each cycle) brings hand changes (a deleted draft)
into it.

`XeroIndex` is the engine's bulk look-up of a cycle (a new or restored state file).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog

from connector.targets.base import ReferenceIndex
from connector.targets.xero.client import XeroClient
from mappings.targets.xero import parse_marker

log = structlog.get_logger(__name__)

INVOICES = "Invoices"
CREDIT_NOTES = "CreditNotes"
COLLECTIONS = (INVOICES, CREDIT_NOTES)
LIVE = ("DRAFT", "SUBMITTED", "AUTHORISED", "PAID")
UNAPPROVED = ("DRAFT", "SUBMITTED")
CANCELLED = ("DELETED", "VOIDED")
_MS_DATE = re.compile(r"/Date\((?P<ms>-?\d+)(?P<offset>[+-]\d{4})?\)/")
_NOT_KEPT = ("HasErrors", "StatusAttributeString", "ValidationErrors", "Warnings", "Payments")
_LINE_KEPT = ("LineItemID", "Description", "LineAmount", "TaxAmount", "AccountCode", "TaxType")


def id_of(doc: Mapping[str, Any]) -> str:
    return str(doc.get("InvoiceID") or doc.get("CreditNoteID") or "")


def collection_of(doc: Mapping[str, Any]) -> str:
    if doc.get("CreditNoteID") or doc.get("Type") in ("ACCRECCREDIT", "ACCPAYCREDIT"):
        return CREDIT_NOTES
    return INVOICES


def parse_xero_time(value: Any) -> datetime | None:
    """Xero's `/Date(ms+0000)/` or an ISO string -> an aware datetime (UTC when unzoned)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    match = _MS_DATE.fullmatch(value.strip())
    if match is not None:
        return datetime.fromtimestamp(int(match.group("ms")) / 1000, tz=UTC)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def day_of(value: Any) -> date | None:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _MS_DATE.fullmatch(value.strip()) is None:
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    moment = parse_xero_time(value)
    return moment.date() if moment is not None else None


def decimal_of(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def money_of(value: Any) -> Decimal:
    return decimal_of(value) or Decimal(0)


def settled_part(doc: Mapping[str, Any]) -> bool:
    """Whether anything was paid or allocated against the document (a credit note: part of
    its credit used, `RemainingCredit` below `Total`)."""
    if money_of(doc.get("AmountPaid")) or money_of(doc.get("AmountCredited")):
        return True
    remaining = decimal_of(doc.get("RemainingCredit"))
    total = decimal_of(doc.get("Total"))
    return remaining is not None and total is not None and remaining < total


def neutral(doc: Mapping[str, Any], *, by_app: bool | None = None) -> dict[str, Any]:
    """A Xero invoice or credit note with the neutral fields added (see the module docstring)."""
    out = dict(doc)
    credit = collection_of(doc) == CREDIT_NOTES
    total = decimal_of(doc.get("Total"))
    if total is not None:
        total = -total if credit else total
    updated = parse_xero_time(doc.get("UpdatedDateUTC"))
    status = str(doc.get("Status") or "") or None
    out.update(
        id=id_of(doc),
        reference=doc.get("Reference"),
        state=status,
        total_amount=None if total is None else str(total.quantize(Decimal("0.01"))),
        updated_at=updated.isoformat() if updated is not None else None,
        paid=status == "PAID",
        part_paid=settled_part(doc),
        collection=CREDIT_NOTES if credit else INVOICES,
    )
    if by_app is not None:
        out["by_app"] = by_app
    return out


def versions(docs: Iterable[Mapping[str, Any]]) -> str:
    """What a status change or an edit is sent against: each document's id and last change."""
    return ";".join(f"{id_of(d)}@{d.get('UpdatedDateUTC') or ''}" for d in docs)


def marked_for(doc: Mapping[str, Any], reference: str) -> bool:
    """Whether any line carries our marker for `reference`."""
    for item in doc.get("LineItems") or ():
        if isinstance(item, Mapping):
            parsed = parse_marker(str(item.get("Description") or ""))
            if parsed is not None and parsed[0] == reference:
                return True
    return False


def line_keys(doc: Mapping[str, Any], reference: str) -> tuple[list[str], list[dict[str, Any]]]:
    """(our line keys, the lines without our marker) of a document."""
    keys: list[str] = []
    foreign: list[dict[str, Any]] = []
    for item in doc.get("LineItems") or ():
        if not isinstance(item, Mapping):
            continue
        parsed = parse_marker(str(item.get("Description") or ""))
        if parsed is not None and parsed[0] == reference:
            keys.append(parsed[1])
        else:
            foreign.append(dict(item))
    return keys, foreign


class Ours:
    """The connector's documents seen by this process, by collection, id and reference, and
    the listings that fill it (see the module docstring)."""

    def __init__(self, client: XeroClient, prefix: str, lock: threading.RLock) -> None:
        self.client = client
        self.prefix = prefix
        self.lock = lock
        self.docs: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in COLLECTIONS}
        self.listed: set[str] = set()
        """Collections listed in full (our prefix): the look-up before creating uses them."""
        self.listed_at: dict[str, datetime] = {}
        """Xero's clock (`DateTimeUTC`) at the first page of each listing in `listed`."""
        self.by_reference: dict[str, set[tuple[str, str]]] = {}
        self.held: dict[str, str] = {}
        """Reference -> the id this process last handed the engine for it."""
        self.credit_notes: bool | None = None
        """Whether the connector has credit notes in Xero (None: not known yet)."""

    # ------------------------------------------------------------------ the memory

    def put(self, doc: Mapping[str, Any]) -> None:
        doc_id = id_of(doc)
        if not doc_id:
            return
        collection = collection_of(doc)
        old = self.docs[collection].get(doc_id)
        new = {k: v for k, v in doc.items() if k not in _NOT_KEPT}
        if isinstance(new.get("LineItems"), list):
            # Enough to adopt, verify and tell ours (the lines' ids, markers and amounts).
            new["LineItems"] = [
                {k: item.get(k) for k in _LINE_KEPT if k in item}
                for item in new["LineItems"]
                if isinstance(item, Mapping)
            ]
        elif old is not None and "LineItems" in old:
            new["LineItems"] = old["LineItems"]
        self.docs[collection][doc_id] = new
        if old is not None and old.get("Reference") != new.get("Reference"):
            self.by_reference.get(str(old.get("Reference")), set()).discard((collection, doc_id))
        self.by_reference.setdefault(str(new.get("Reference")), set()).add((collection, doc_id))

    def all(self, reference: str) -> list[dict[str, Any]]:
        """Every document seen with this reference, whatever its status."""
        keys = sorted(self.by_reference.get(reference, ()))
        return [self.docs[c][i] for c, i in keys if self.docs[c][i].get("Reference") == reference]

    def live(self, collection: str, reference: str) -> list[dict[str, Any]]:
        return [
            d
            for d in self.all(reference)
            if collection_of(d) == collection and d.get("Status") in LIVE
        ]

    def find(self, doc_id: str) -> dict[str, Any] | None:
        for collection in COLLECTIONS:
            if doc_id in self.docs[collection]:
                return self.docs[collection][doc_id]
        return None

    def carries_marker(self, invoice: Mapping[str, Any], reference: str) -> bool:
        """Ours: our reference, and made by this app (an invoice listed under `createdByMyApp`
        or written by us) or, shown by its lines, our marker on each of them."""
        if (invoice.get("reference") or invoice.get("Reference")) != reference:
            return False
        items = invoice.get("LineItems")
        if isinstance(items, list) and items:
            keys, foreign = line_keys(invoice, reference)
            if keys and not foreign:
                return True
        if collection_of(invoice) == INVOICES:
            if invoice.get("by_app") is True:
                return True
            with self.lock:
                return self.find(id_of(invoice)) is not None
        return bool(isinstance(items, list) and items and marked_for(invoice, reference))

    # ------------------------------------------------------------------ reading into it

    def remember(self, doc: Mapping[str, Any], *, by_app: bool | None) -> dict[str, Any]:
        """Keep a document of ours in memory; return it normalised."""
        reference = str(doc.get("Reference") or "")
        collection = collection_of(doc)
        with self.lock:
            known = self.find(id_of(doc)) is not None
            ours = known or (
                reference.startswith(self.prefix)
                and (by_app is True if collection == INVOICES else marked_for(doc, reference))
            )
            if ours:
                self.put(doc)
                if collection == CREDIT_NOTES:
                    self.credit_notes = True
        return neutral(doc, by_app=True if ours and collection == INVOICES else by_app)

    def list(
        self,
        collection: str,
        prefix: str,
        on_answer: Callable[[Mapping[str, Any]], None] | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        clocks: list[datetime | None] = []

        def answered(answer: Mapping[str, Any]) -> None:
            clocks.append(parse_xero_time(answer.get("DateTimeUTC")))
            if on_answer is not None:
                on_answer(answer)

        rows = self.client.list_ours(collection, prefix, on_answer=answered, **kwargs)
        by_app = True if collection == INVOICES else None
        out = [self.remember(row, by_app=by_app) for row in rows]
        if self.prefix.startswith(prefix):
            with self.lock:
                self.listed.add(collection)
                if clocks and clocks[0] is not None:
                    self.listed_at[collection] = clocks[0]
                else:
                    self.listed_at.pop(collection, None)
                if collection == CREDIT_NOTES:
                    self.credit_notes = bool(self.docs[CREDIT_NOTES])
        return out

    def recalled(self, collection: str) -> tuple[datetime, Sequence[dict[str, Any]]] | None:
        """(Xero's clock at the listing, every document of ours in the collection as this
        process last saw it) when the collection was listed in full and not forgotten since;
        None otherwise. Each document is as Xero listed it at that time or as a later answer to
        this process showed it: what changed otherwise since then is what an
        `If-Modified-Since` read from that time returns."""
        with self.lock:
            when = self.listed_at.get(collection)
            if collection not in self.listed or when is None:
                return None
            by_app = True if collection == INVOICES else None
            docs = [
                neutral(doc, by_app=by_app)
                for doc in self.docs[collection].values()
                if str(doc.get("Reference") or "").startswith(self.prefix)
            ]
        return when, docs

    def ensure_listed(self, collections: Iterable[str]) -> None:
        with self.lock:
            for collection in dict.fromkeys(collections):
                if collection not in self.listed:
                    count = len(self.list(collection, self.prefix))
                    log.info("xero.listed_ours", collection=collection, documents=count)

    def forget_listing(self, collection: str) -> None:
        """A write left in doubt: the next create lists the collection again."""
        with self.lock:
            self.listed.discard(collection)
            self.listed_at.pop(collection, None)

    def current(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The documents as Xero holds them now: invoices 50 ids to a request, credit notes
        (no list by id) one each."""
        with self.lock:
            notes = [i for i in ids if i in self.docs[CREDIT_NOTES]]
        found: dict[str, dict[str, Any]] = {}
        invoice_ids = [i for i in ids if i not in notes]
        for row in self.client.invoices_by_ids(invoice_ids) if invoice_ids else ():
            found[id_of(row)] = row
        for doc_id in [i for i in ids if i not in found]:
            for collection in (CREDIT_NOTES, INVOICES) if doc_id in notes else (CREDIT_NOTES,):
                one = self.client.get_document(collection, doc_id)
                if one is not None:
                    found[doc_id] = one
                    break
        for row in found.values():
            self.remember(row, by_app=None)
        return found


class XeroIndex(ReferenceIndex):
    """The connector's documents in Xero, listed in bulk at most once a cycle (a new or
    restored state file), live ones only; `own` answers from it."""

    def __init__(self, *, wanted: bool) -> None:
        super().__init__(wanted=wanted, keep=lambda invoice: invoice.get("state") in LIVE)
