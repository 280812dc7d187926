"""Xero as a `Target`: sales invoices (and credit notes) 50 to a request, verified, then approved.

Reads. `find` and `changes_since` list the connector's documents 1,000 to a request: invoices
made by this app (`createdByMyApp=true`) with our reference prefix, credit notes by reference and
our line markers (Xero has no app filter for them). Every answer is normalised to the neutral
fields of `connector.targets.base` (`id` = InvoiceID or CreditNoteID, `reference`, `state` =
Xero's `Status`, `total_amount` signed as Kantata's total (a credit note's is negative),
`updated_at`, `paid`) and keeps Xero's own fields beside them.

What the target has seen of ours. Every document of ours the target reads or writes is kept in
memory (`_Ours`); once a collection was listed in full (by `find`, or before the first create),
that memory is the look-up before creating: one listing per 1,000 documents, not one per batch.
It stays complete because the connector's process is the only writer of our documents (the
state file's writer lock), every write's answer goes into it, a write left in doubt makes the
next create list again, and `changes_since` (each cycle) brings hand changes (a deleted draft)
into it.

Creates. Contacts are found from the Kantata customer (the profile's `[xero.contacts]` map,
else `ContactNumber` = the client id, else the name; listed once), the missing ones made in one
batch. Drafts go 50 to a request (`summarizeErrors=false`, an `Idempotency-Key` naming the body;
a lost answer is resolved by looking the references up), each answer is checked against the
ledger document to the minor unit, and the exact ones are approved in one more request (unless
the profile keeps drafts). A draft whose totals are wrong is left unapproved and reported
(`Written.problems`): the engine discards it.

Updates edit in place (same id, the full line list with `LineItemID`s; an unpaid approved
invoice too); only when Xero refuses to edit an approved invoice is it voided and made again.
A paid or part-paid document is never touched (`TargetRefusedError`). Cancels: `DELETED` for
drafts and submitted ones, `VOIDED` for approved unpaid ones.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog

from connector.errors import (
    AmbiguousWriteError,
    ApiError,
    AuthError,
    LimitReachedError,
    PermanentApiError,
)
from connector.targets.base import (
    Cancel,
    Cancelled,
    DuplicateInTargetError,
    Target,
    TargetGoneError,
    TargetInvoice,
    TargetRefusedError,
    Write,
    Written,
)
from connector.targets.xero.client import BATCH, XeroClient, XeroResult, deep_link
from mappings.errors import MappingError
from mappings.ledger import LedgerDocument
from mappings.targets.xero import (
    REFERENCE_PREFIX,
    XeroPlan,
    check_totals,
    parse_marker,
    plan_invoice,
)
from mappings.targets.xero_profile import XeroSettings

log = structlog.get_logger(__name__)

INVOICES = "Invoices"
CREDIT_NOTES = "CreditNotes"
COLLECTIONS = (INVOICES, CREDIT_NOTES)
LIVE = ("DRAFT", "SUBMITTED", "AUTHORISED", "PAID")
UNAPPROVED = ("DRAFT", "SUBMITTED")
CANCELLED = ("DELETED", "VOIDED")
_MS_DATE = re.compile(r"/Date\((?P<ms>-?\d+)(?P<offset>[+-]\d{4})?\)/")
_REFUSED_EDIT = ("valid status for modification", "cannot be edited")
_NOT_KEPT = ("HasErrors", "StatusAttributeString", "ValidationErrors", "Warnings", "Payments")
_LINE_KEPT = ("LineItemID", "Description", "LineAmount", "TaxAmount", "AccountCode", "TaxType")
_LINE_FIELDS = (
    "LineItemID",
    "Description",
    "Quantity",
    "UnitAmount",
    "LineAmount",
    "AccountCode",
    "TaxType",
    "TaxAmount",
    "ItemCode",
    "DiscountRate",
    "Tracking",
)


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


def _day(value: Any) -> date | None:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _MS_DATE.fullmatch(value.strip()) is None:
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    moment = parse_xero_time(value)
    return moment.date() if moment is not None else None


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _money(value: Any) -> Decimal:
    return _decimal(value) or Decimal(0)


def _settled_part(doc: Mapping[str, Any]) -> bool:
    """Whether anything was paid or allocated against the document (a credit note: part of
    its credit used, `RemainingCredit` below `Total`)."""
    if _money(doc.get("AmountPaid")) or _money(doc.get("AmountCredited")):
        return True
    remaining = _decimal(doc.get("RemainingCredit"))
    total = _decimal(doc.get("Total"))
    return remaining is not None and total is not None and remaining < total


def neutral(doc: Mapping[str, Any], *, by_app: bool | None = None) -> dict[str, Any]:
    """A Xero invoice or credit note with the neutral fields added (see the module docstring)."""
    out = dict(doc)
    credit = collection_of(doc) == CREDIT_NOTES
    total = _decimal(doc.get("Total"))
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
        part_paid=_settled_part(doc),
        collection=CREDIT_NOTES if credit else INVOICES,
    )
    if by_app is not None:
        out["by_app"] = by_app
    return out


def _versions(docs: Iterable[Mapping[str, Any]]) -> str:
    """What a status change or an edit is sent against: each document's id and last change."""
    return ";".join(f"{id_of(d)}@{d.get('UpdatedDateUTC') or ''}" for d in docs)


def _marked_for(doc: Mapping[str, Any], reference: str) -> bool:
    """Whether any line carries our marker for `reference`."""
    for item in doc.get("LineItems") or ():
        if isinstance(item, Mapping):
            parsed = parse_marker(str(item.get("Description") or ""))
            if parsed is not None and parsed[0] == reference:
                return True
    return False


def _line_keys(doc: Mapping[str, Any], reference: str) -> tuple[list[str], list[dict[str, Any]]]:
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


class _Ours:
    """The connector's documents seen by this process, by collection and id."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in COLLECTIONS}
        self.listed: set[str] = set()
        """Collections listed in full (our prefix): the look-up before creating uses them."""
        self.by_reference: dict[str, set[tuple[str, str]]] = {}

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


class XeroTarget:
    """Xero's Accounting API behind the `Target` interface (see the module docstring)."""

    name = "Xero"
    batch_size = BATCH
    link_costs_a_request = True
    """The deep link needs the organisation's short code (one request a process)."""

    def __init__(
        self,
        client: XeroClient,
        settings: XeroSettings,
        *,
        kantata_service: str = "Kantata",
        prefix: str = REFERENCE_PREFIX,
    ) -> None:
        self.client = client
        self.settings = settings
        self.kantata_service = kantata_service
        """How Kantata is named in messages."""
        self.prefix = prefix
        self._lock = threading.RLock()
        self._ours = _Ours()
        self._held: dict[str, str] = {}
        """Reference -> the id this process last handed the engine for it."""
        self._short_code: str | None = None
        self._rates: dict[str, Decimal] | None = None
        self._accounts: dict[str, str] | None = None
        self._contacts: dict[str, str] | None = None
        """Lower-cased `number:<ContactNumber>` / `name:<Name>` -> ContactID."""
        self._credit_notes: bool | None = None
        """Whether the connector has credit notes in Xero (None: not known yet)."""
        self._listed_at: dict[str, datetime | None] = {}
        """Xero's clock when a collection was last listed in full (`DateTimeUTC`)."""

    # ================================================================== settings (read once)

    def _settings_loaded(self) -> tuple[dict[str, Decimal], dict[str, str]]:
        with self._lock:
            if self._rates is None:
                rates: dict[str, Decimal] = {}
                for row in self.client.tax_rates():
                    if str(row.get("Status") or "ACTIVE") != "ACTIVE":
                        continue
                    rate = _decimal(row.get("EffectiveRate"))
                    if rate is None:
                        rate = sum(
                            (_money(c.get("Rate")) for c in row.get("TaxComponents") or ()),
                            Decimal(0),
                        )
                    rates[str(row.get("TaxType"))] = rate
                self._rates = rates
            if self._accounts is None:
                self._accounts = {
                    str(row.get("Code")): str(row.get("Status") or "ACTIVE")
                    for row in self.client.accounts()
                    if row.get("Code")
                }
            return self._rates, self._accounts

    def short_code(self) -> str:
        with self._lock:
            if self._short_code is None:
                self._short_code = str(self.client.organisation().get("ShortCode") or "")
            return self._short_code

    # ================================================================== reads

    def _remember(self, doc: Mapping[str, Any], *, by_app: bool | None) -> dict[str, Any]:
        """Keep a document of ours in memory; return it normalised."""
        reference = str(doc.get("Reference") or "")
        collection = collection_of(doc)
        with self._lock:
            known = self._ours.find(id_of(doc)) is not None
            ours = known or (
                reference.startswith(self.prefix)
                and (by_app is True if collection == INVOICES else _marked_for(doc, reference))
            )
            if ours:
                self._ours.put(doc)
                if collection == CREDIT_NOTES:
                    self._credit_notes = True
        return neutral(doc, by_app=True if ours and collection == INVOICES else by_app)

    def _list(self, collection: str, prefix: str, **kwargs: Any) -> list[dict[str, Any]]:
        outer = kwargs.pop("on_answer", None)
        times: list[datetime | None] = []

        def seen(answer: Mapping[str, Any]) -> None:
            times.append(parse_xero_time(answer.get("DateTimeUTC")))
            if outer is not None:
                outer(answer)

        rows = self.client.list_ours(collection, prefix, on_answer=seen, **kwargs)
        by_app = True if collection == INVOICES else None
        out = [self._remember(row, by_app=by_app) for row in rows]
        if self.prefix.startswith(prefix):
            with self._lock:
                self._ours.listed.add(collection)
                self._listed_at[collection] = times[0] if times else None
                if collection == CREDIT_NOTES:
                    self._credit_notes = bool(self._ours.docs[CREDIT_NOTES])
        return out

    def _ensure_listed(self, collections: Iterable[str]) -> None:
        with self._lock:
            for collection in dict.fromkeys(collections):
                if collection not in self._ours.listed:
                    count = len(self._list(collection, self.prefix))
                    log.info("xero.listed_ours", collection=collection, documents=count)

    def find(self, prefix: str) -> Iterator[dict[str, Any]]:
        for collection in COLLECTIONS:
            yield from self._list(collection, prefix)

    def get(self, target_id: str) -> dict[str, Any] | None:
        target_id = str(target_id)
        with self._lock:
            known = self._ours.find(target_id)
        note = known is not None and collection_of(known) == CREDIT_NOTES
        for collection in (CREDIT_NOTES, INVOICES) if note else COLLECTIONS:
            doc = self.client.get_document(collection, target_id)
            if doc is not None:
                return self._remember(doc, by_app=None)
        return None

    def expect_credits(self, known: bool) -> None:
        """The engine's word on whether its books hold credits (credit notes here): when not,
        the change poll reads invoices alone (a quiet cycle is one request). A credit note made
        or seen by this process counts whatever is said."""
        with self._lock:
            if not self._credit_notes:
                self._credit_notes = known

    def changes_since(
        self,
        since: datetime | None,
        *,
        on_server_time: Callable[[datetime | None], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Our invoices changed since `since` (one request per 1,000); our credit notes too
        when the connector has any (learnt once a process by listing them), so a quiet cycle
        with no credit notes costs one request."""

        def clock(answer: Mapping[str, Any]) -> None:
            if on_server_time is not None:
                on_server_time(parse_xero_time(answer.get("DateTimeUTC")))

        if since is not None and (since.tzinfo is None or since.utcoffset() is None):
            raise ValueError("timestamps sent to Xero must be timezone-aware")
        if since is None:
            for collection in COLLECTIONS:
                with self._lock:
                    at = self._listed_at.get(collection)
                    kept = None
                    if collection in self._ours.listed and at is not None:
                        kept = [dict(d) for d in self._ours.docs[collection].values()]
                if kept is None:
                    yield from self._list(
                        collection, self.prefix, on_answer=clock if collection == INVOICES else None
                    )
                    continue
                # Listed in full by this process's look-up before creating, every write since
                # known from its answer: no second listing. Xero's clock at that listing is
                # when this one stands for, so the next poll reads everything after it.
                if collection == INVOICES and on_server_time is not None:
                    on_server_time(at)
                for doc in kept:
                    yield neutral(doc, by_app=True if collection == INVOICES else None)
            return
        for row in self.client.changed_since(since, INVOICES, on_answer=clock):
            yield self._remember(row, by_app=True)
        with self._lock:
            known = self._credit_notes
        if known is None:
            yield from (
                d
                for d in self._list(CREDIT_NOTES, self.prefix)
                if (parse_xero_time(d.get("UpdatedDateUTC")) or since) >= since
            )
        elif known:
            for row in self.client.changed_since(since, CREDIT_NOTES):
                yield self._remember(row, by_app=None)

    def new_index(self, *, wanted: bool) -> XeroIndex:
        return XeroIndex(wanted=wanted)

    def link(self, invoice: TargetInvoice) -> str | None:
        """The deep link into the organisation (its ShortCode, read once)."""
        doc_id = invoice.get("id") or id_of(invoice)
        if not doc_id:
            return None
        try:
            code = self.short_code()
        except (AuthError, LimitReachedError):
            raise
        except ApiError as exc:
            log.warning("xero.no_short_code", error=str(exc))
            return None
        if not code:
            return None
        return deep_link(code, str(doc_id), credit_note=collection_of(invoice) == CREDIT_NOTES)

    def carries_marker(self, invoice: TargetInvoice, reference: str) -> bool:
        """Ours: our reference, and made by this app (an invoice listed under `createdByMyApp`
        or written by us) or, shown by its lines, our marker on each of them."""
        if (invoice.get("reference") or invoice.get("Reference")) != reference:
            return False
        items = invoice.get("LineItems")
        if isinstance(items, list) and items:
            keys, foreign = _line_keys(invoice, reference)
            if keys and not foreign:
                return True
        if collection_of(invoice) == INVOICES:
            if invoice.get("by_app") is True:
                return True
            with self._lock:
                return self._ours.find(id_of(invoice)) is not None
        return bool(isinstance(items, list) and items and _marked_for(invoice, reference))

    def as_asked(self, doc: LedgerDocument, invoice: TargetInvoice) -> bool:
        try:
            plan = self._plan(doc, check=False)
        except MappingError:
            return False
        if check_totals(plan, invoice):
            return False
        items = invoice.get("LineItems")
        return not (isinstance(items, list) and len(items) != len(plan.lines))

    def line_drift(self, invoice: TargetInvoice, pushed: Sequence[str]) -> list[str]:
        items = invoice.get("LineItems")
        if not isinstance(items, list):
            return []
        reference = str(invoice.get("reference") or invoice.get("Reference") or "")
        keys, foreign = _line_keys(invoice, reference)
        problems = []
        if len(items) != len(pushed):
            problems.append(f"{len(items)} lines, pushed {len(pushed)}")
        gone = [k for k in pushed if k not in keys]
        if gone:
            problems.append(f"lines removed in Xero: {', '.join(gone)}")
        if foreign:
            problems.append(f"{len(foreign)} line(s) added in Xero")
        return problems

    def header_differs(self, doc: LedgerDocument, invoice: TargetInvoice) -> bool:
        try:
            plan = self._plan(doc, check=False)
        except MappingError:
            return True
        if invoice.get("CurrencyCode") not in (None, plan.currency):
            return True
        if invoice.get("Type") not in (None, plan.type):
            return True
        if _day(invoice.get("Date")) != date.fromisoformat(plan.date):
            return True
        if plan.due_date is not None and _day(invoice.get("DueDate")) != date.fromisoformat(
            plan.due_date
        ):
            return True
        contact = invoice.get("Contact")
        if isinstance(contact, Mapping):
            wanted = self._known_contact(doc)
            if wanted is not None and contact.get("ContactID"):
                return str(contact.get("ContactID")) != wanted
        return False

    # ================================================================== planning

    def _plan(self, doc: LedgerDocument, *, check: bool = True) -> XeroPlan:
        rates, accounts = self._settings_loaded() if check else (None, None)
        plan = plan_invoice(doc, self.settings, tax_rates=rates)
        if plan.due_date is None:
            # Xero approves nothing without a DueDate: Kantata's terms from the invoice date.
            due = doc.invoice_date + timedelta(days=doc.payment_schedule or 0)
            plan = replace(plan, due_date=due.isoformat())
        if accounts is not None and rates is not None:
            for line in plan.lines:
                if accounts.get(line.account_code) not in ("ACTIVE",):
                    raise MappingError(
                        doc.kantata_id,
                        "account",
                        f"Xero has no active account {line.account_code} (line {line.key}): "
                        "set the account codes in [xero.accounts] / sales_account",
                    )
                if line.tax_type not in rates:
                    raise MappingError(
                        doc.kantata_id,
                        "tax_type",
                        f"Xero has no active tax type {line.tax_type} (line {line.key}): "
                        "set it in [xero] / [xero.tax_types]",
                    )
        return plan

    # ================================================================== contacts

    @staticmethod
    def _client(doc: LedgerDocument) -> tuple[str | None, str]:
        client_id = getattr(doc, "client_id", None)
        name = (doc.customer_name or "").strip()[:255] or "Unknown customer"
        return (str(client_id) if client_id else None), name

    def _known_contact(self, doc: LedgerDocument) -> str | None:
        client_id, name = self._client(doc)
        mapped = self.settings.contact_for(client_id, name)
        if mapped is not None:
            return mapped
        with self._lock:
            if self._contacts is None:
                return None
            found = self._contacts.get(f"number:{client_id}") if client_id else None
            return found or self._contacts.get(f"name:{name.lower()}")

    def _load_contacts(self) -> None:
        rows = self.client.list_contacts()
        table: dict[str, str] = {}
        for row in rows:
            if str(row.get("ContactStatus") or "ACTIVE") != "ACTIVE" or not row.get("ContactID"):
                continue
            if row.get("ContactNumber"):
                table[f"number:{row['ContactNumber']}"] = str(row["ContactID"])
            table.setdefault(f"name:{str(row.get('Name') or '').lower()}", str(row["ContactID"]))
        self._contacts = table

    def _contacts_for(self, docs: Mapping[int, LedgerDocument]) -> dict[int, str | Exception]:
        """ContactID per item: mapped, found (listed once a process) or created (one batch)."""
        out: dict[int, str | Exception] = {}
        with self._lock:
            for attempt in range(2):
                if self._contacts is None:
                    self._load_contacts()
                missing: dict[str, dict[str, Any]] = {}
                waiting: dict[int, str] = {}
                for pos, doc in docs.items():
                    if pos in out:
                        continue
                    found = self._known_contact(doc)
                    if found is not None:
                        out[pos] = found
                        continue
                    client_id, name = self._client(doc)
                    key = name.lower()
                    body: dict[str, Any] = {"Name": name}
                    if client_id:
                        body["ContactNumber"] = client_id[:50]
                    missing.setdefault(key, body)
                    waiting[pos] = key
                if not missing:
                    return out
                keys = list(missing)
                try:
                    results = self.client.save("PUT", "Contacts", [missing[k] for k in keys])
                except AmbiguousWriteError:
                    if attempt:
                        raise
                    self._contacts = None  # a new listing finds what was made
                    continue
                refused: dict[str, str] = {}
                assert self._contacts is not None
                for key, result in zip(keys, results, strict=True):
                    if result.ok and result.document is not None:
                        contact_id = str(result.document["ContactID"])
                        self._contacts[f"name:{key}"] = contact_id
                        number = missing[key].get("ContactNumber")
                        if number:
                            self._contacts[f"number:{number}"] = contact_id
                    else:
                        refused[key] = "; ".join(result.errors)
                for pos, key in waiting.items():
                    if key not in refused:
                        out[pos] = self._contacts[f"name:{key}"]
                    elif attempt:
                        out[pos] = PermanentApiError(
                            "xero",
                            f"contact {missing[key]['Name']!r} for invoice "
                            f"{docs[pos].kantata_id}: {refused[key]}",
                            method="PUT",
                            path="/Contacts",
                        )
                if not refused:
                    return out
                self._contacts = None  # made by hand since the listing: list again once
        return out

    # ================================================================== writes

    @property
    def _keep_drafts(self) -> bool:
        return self.settings.keep_as_draft

    def _item_error(self, plan: XeroPlan, result: XeroResult, method: str) -> Exception:
        message = "; ".join(result.errors) or "refused"
        if "currency" in message.lower():
            return MappingError(
                plan.kantata_id,
                "currency",
                f"Xero cannot hold an invoice in {plan.currency}: {message}",
            )
        return PermanentApiError(
            "xero",
            f"{plan.reference}: {message}",
            method=method,
            path=f"/{plan.collection}",
        )

    def _written(
        self,
        plan: XeroPlan,
        doc: Mapping[str, Any],
        *,
        adopted: bool = False,
        created: bool = False,
        detail: str = "",
        problems: list[str] | None = None,
    ) -> Written:
        shown = neutral(doc, by_app=True if plan.collection == INVOICES else None)
        with self._lock:
            self._held[plan.reference] = shown["id"]
        return Written(
            invoice=shown,
            target_id=shown["id"],
            link=self.link(shown),
            state=shown["state"],
            lines=None if adopted else [line.key for line in plan.lines],
            adopted=adopted,
            created=created,
            problems=list(problems or []),
            detail=detail,
        )

    def _approve(
        self, docs: dict[int, tuple[XeroPlan, dict[str, Any]]]
    ) -> dict[int, dict[str, Any] | Exception]:
        """Approve verified drafts, one request per collection and 50; the answers by item."""
        out: dict[int, dict[str, Any] | Exception] = {}
        for collection in COLLECTIONS:
            chosen = [(pos, p, d) for pos, (p, d) in docs.items() if p.collection == collection]
            if not chosen:
                continue
            try:
                results = self.client.approve(
                    collection,
                    [(id_of(d), p.reference) for _pos, p, d in chosen],
                    _versions(d for _pos, _p, d in chosen),
                )
            except AmbiguousWriteError as exc:
                self._forget_listing(collection)
                for pos, _p, _d in chosen:
                    out[pos] = exc
                continue
            for (pos, plan, doc), result in zip(chosen, results, strict=True):
                if result.ok and result.document is not None:
                    merged = {**doc, **result.document}
                    with self._lock:
                        self._ours.put(merged)
                    out[pos] = merged
                else:
                    out[pos] = PermanentApiError(
                        "xero",
                        f"{plan.reference}: made in Xero as draft "
                        f"{doc.get('InvoiceNumber') or doc.get('CreditNoteNumber') or id_of(doc)}"
                        f" but Xero refused to approve it: {'; '.join(result.errors)}",
                        method="POST",
                        path=f"/{collection}",
                    )
        return out

    def _forget_listing(self, collection: str) -> None:
        """A write left in doubt: the next create lists the collection again."""
        with self._lock:
            self._ours.listed.discard(collection)

    def _make(
        self, plans: dict[int, XeroPlan], docs: Mapping[int, LedgerDocument]
    ) -> dict[int, dict[str, Any] | Exception]:
        """Create drafts of the plans (contacts first), one request per collection and 50."""
        out: dict[int, dict[str, Any] | Exception] = {}
        contacts = self._contacts_for({pos: docs[pos] for pos in plans})
        for collection in COLLECTIONS:
            chosen: list[tuple[int, XeroPlan, dict[str, Any]]] = []
            for pos, plan in plans.items():
                if plan.collection != collection:
                    continue
                contact = contacts.get(pos)
                if isinstance(contact, Exception):
                    out[pos] = contact
                elif contact is None:
                    out[pos] = PermanentApiError(
                        "xero", f"{plan.reference}: no Xero contact for the customer"
                    )
                else:
                    chosen.append((pos, plan, plan.payload(contact, status="DRAFT")))
            if not chosen:
                continue
            with self._lock:
                earlier = {
                    plan.reference: self._ours.all(plan.reference) for _p, plan, _b in chosen
                }
            made_before = ";".join(
                f"{ref}:{','.join(sorted(id_of(d) for d in docs))}"
                for ref, docs in earlier.items()
                if docs
            )
            try:
                results = self.client.save(
                    "PUT", collection, [body for _p, _pl, body in chosen], made_before
                )
            except AmbiguousWriteError as exc:
                self._forget_listing(collection)
                for pos, _plan, _body in chosen:
                    out[pos] = exc
                continue
            for (pos, plan, _body), result in zip(chosen, results, strict=True):
                if result.ok and result.document is not None:
                    with self._lock:
                        self._ours.put(result.document)
                        if collection == CREDIT_NOTES:
                            self._credit_notes = True
                    out[pos] = dict(result.document)
                else:
                    out[pos] = self._item_error(plan, result, "PUT")
        return out

    def create(self, items: Sequence[Write]) -> list[Written | Exception]:
        results: list[Written | Exception | None] = [None] * len(items)
        plans: dict[int, XeroPlan] = {}
        for pos, item in enumerate(items):
            try:
                plans[pos] = self._plan(item.doc)
            except MappingError as exc:
                results[pos] = exc
        if plans:
            self.link({"id": "-"})  # the organisation's short code, read once, before writing
        self._ensure_listed(p.collection for p in plans.values())
        adopted: dict[int, dict[str, Any]] = {}
        to_make: dict[int, XeroPlan] = {}
        with self._lock:
            for pos, plan in plans.items():
                live = self._ours.live(plan.collection, plan.reference)
                if len(live) > 1:
                    results[pos] = DuplicateInTargetError(
                        "Xero", plan.reference, [id_of(d) for d in live]
                    )
                elif live:
                    adopted[pos] = dict(live[0])
                else:
                    to_make[pos] = plan
        made = self._make(to_make, {pos: items[pos].doc for pos in to_make}) if to_make else {}
        checked: dict[int, tuple[XeroPlan, dict[str, Any], list[str]]] = {}
        for pos, outcome in made.items():
            if isinstance(outcome, Exception):
                results[pos] = outcome
            else:
                checked[pos] = (plans[pos], outcome, check_totals(plans[pos], outcome))
        for pos, doc in adopted.items():
            log.info("xero.adopted", reference=plans[pos].reference, id=id_of(doc))
            checked[pos] = (plans[pos], doc, check_totals(plans[pos], doc))
        approve = {
            pos: (plan, doc)
            for pos, (plan, doc, problems) in checked.items()
            if not problems and doc.get("Status") in UNAPPROVED and not self._keep_drafts
        }
        approved = self._approve(approve) if approve else {}
        for pos, (plan, doc, problems) in checked.items():
            outcome = approved.get(pos, doc)
            if isinstance(outcome, Exception):
                results[pos] = outcome
                continue
            if problems:
                log.warning("xero.wrong_totals", reference=plan.reference, problems=problems)
            results[pos] = self._written(
                plan,
                outcome,
                adopted=pos in adopted,
                created=pos in made,
                problems=problems,
                detail="found in Xero from an earlier attempt" if pos in adopted else "",
            )
        return [r if r is not None else RuntimeError("no result") for r in results]

    # ----------------------------------------------------------------- reading before writes

    def _current(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The documents as Xero holds them now: invoices 50 ids to a request, credit notes
        (no list by id) one each."""
        with self._lock:
            notes = [i for i in ids if i in self._ours.docs[CREDIT_NOTES]]
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
            self._remember(row, by_app=None)
        return found

    @staticmethod
    def _refusal(doc: Mapping[str, Any]) -> TargetRefusedError | None:
        status = str(doc.get("Status") or "")
        doc_id = id_of(doc)
        number = doc.get("InvoiceNumber") or doc.get("CreditNoteNumber") or doc_id
        if status == "PAID":
            return TargetRefusedError(
                doc_id, "PAID", f"Xero {number} is paid: never changed", neutral(doc)
            )
        if _settled_part(doc):
            return TargetRefusedError(
                doc_id,
                "part_paid",
                f"Xero {number} has a payment or credit allocated: never changed",
                neutral(doc),
            )
        return None

    def _edit_payload(
        self, plan: XeroPlan, doc: Mapping[str, Any], contact: str, force: bool
    ) -> tuple[dict[str, Any], str]:
        keys, foreign = _line_keys(doc, plan.reference)
        ids: dict[str, str] = {}
        for item in doc.get("LineItems") or ():
            parsed = parse_marker(str(item.get("Description") or ""))
            if parsed is not None and parsed[0] == plan.reference and item.get("LineItemID"):
                ids.setdefault(parsed[1], str(item["LineItemID"]))
        body = plan.payload(
            contact,
            xero_id=id_of(doc),
            line_item_ids=ids,
            status=str(doc.get("Status") or "DRAFT"),
        )
        if foreign and not force:
            body["LineItems"] += [
                {k: v for k, v in line.items() if k in _LINE_FIELDS} for line in foreign
            ]
        wanted = [line.key for line in plan.lines]
        added = len([k for k in wanted if k not in ids])
        removed = len([k for k in keys if k not in wanted])
        parts = [f"{added} lines added"] if added else []
        parts += [f"{removed} removed"] if removed else []
        parts += [f"{len(foreign)} hand-made removed"] if foreign and force else []
        return body, ", ".join(parts) or "edited in place"

    def update(self, items: Sequence[Write]) -> list[Written | Exception]:
        results: list[Written | Exception | None] = [None] * len(items)
        plans: dict[int, XeroPlan] = {}
        for pos, item in enumerate(items):
            if item.target_id is None:
                results[pos] = TargetGoneError("", "no Xero id to update")
                continue
            try:
                plans[pos] = self._plan(item.doc)
            except MappingError as exc:
                results[pos] = exc
        current = self._current([str(items[pos].target_id) for pos in plans])
        edits: dict[int, tuple[XeroPlan, dict[str, Any]]] = {}
        remake: dict[int, tuple[XeroPlan, dict[str, Any], str]] = {}
        for pos, plan in plans.items():
            target_id = str(items[pos].target_id)
            doc = current.get(target_id)
            if doc is None:
                results[pos] = TargetGoneError(target_id, f"Xero has no document {target_id}")
                continue
            refused = self._refusal(doc)
            if refused is not None:
                results[pos] = refused
            elif doc.get("Status") in CANCELLED:
                results[pos] = TargetGoneError(
                    target_id, f"Xero {target_id} is {doc.get('Status')} in Xero"
                )
            elif collection_of(doc) != plan.collection:
                remake[pos] = (plan, doc, "the total changed sign")
            else:
                edits[pos] = (plan, doc)
        contacts = self._contacts_for({pos: items[pos].doc for pos in edits})
        edited: dict[int, tuple[XeroPlan, dict[str, Any], str]] = {}
        for collection in COLLECTIONS:
            chosen: list[tuple[int, XeroPlan, dict[str, Any], dict[str, Any], str]] = []
            for pos, (plan, doc) in edits.items():
                if plan.collection != collection:
                    continue
                contact = contacts.get(pos)
                if isinstance(contact, Exception) or contact is None:
                    results[pos] = contact or PermanentApiError("xero", "no contact")
                    continue
                body, detail = self._edit_payload(plan, doc, contact, items[pos].force)
                chosen.append((pos, plan, doc, body, detail))
            if not chosen:
                continue
            try:
                answers = self.client.save(
                    "POST", collection, [c[3] for c in chosen], _versions(c[2] for c in chosen)
                )
            except AmbiguousWriteError as exc:
                for pos, *_rest in chosen:
                    results[pos] = exc
                continue
            for (pos, plan, doc, _body, detail), result in zip(chosen, answers, strict=True):
                if result.ok and result.document is not None:
                    with self._lock:
                        self._ours.put(result.document)
                    edited[pos] = (plan, dict(result.document), detail)
                    continue
                message = "; ".join(result.errors).lower()
                if "payment" in message or "credit note" in message:
                    # paid since it was read: never voided, never touched
                    results[pos] = TargetRefusedError(
                        id_of(doc), "part_paid", f"Xero refused: {'; '.join(result.errors)}"
                    )
                elif doc.get("Status") == "AUTHORISED" and any(m in message for m in _REFUSED_EDIT):
                    remake[pos] = (plan, doc, "Xero refused to edit the approved document")
                else:
                    results[pos] = self._item_error(plan, result, "POST")
        approve: dict[int, tuple[XeroPlan, dict[str, Any]]] = {}
        checked: dict[int, tuple[XeroPlan, dict[str, Any], str, list[str]]] = {}
        for pos, (plan, doc, detail) in edited.items():
            problems = check_totals(plan, doc)
            checked[pos] = (plan, doc, detail, problems)
            if not problems and doc.get("Status") in UNAPPROVED and not self._keep_drafts:
                approve[pos] = (plan, doc)
        approved = self._approve(approve) if approve else {}
        for pos, (plan, doc, detail, problems) in checked.items():
            outcome = approved.get(pos, doc)
            if isinstance(outcome, Exception):
                results[pos] = outcome
            else:
                results[pos] = self._written(plan, outcome, detail=detail, problems=problems)
        if remake:
            for pos, written in self._remake(remake, items).items():
                results[pos] = written
        return [r if r is not None else RuntimeError("no result") for r in results]

    def _remake(
        self, remake: dict[int, tuple[XeroPlan, dict[str, Any], str]], items: Sequence[Write]
    ) -> dict[int, Written | Exception]:
        """Void (or delete) each old document, then make it again: first the old one goes, so
        the books never hold two; one that cannot go is left as it is."""
        out: dict[int, Written | Exception] = {}
        gone: dict[int, XeroPlan] = {}
        cancelled = self._cancel_docs({pos: doc for pos, (_p, doc, _w) in remake.items()})
        for pos, outcome in cancelled.items():
            if isinstance(outcome, Exception):
                out[pos] = outcome
            else:
                gone[pos] = remake[pos][0]
        if not gone:
            return out
        made = self.create([replace(items[pos], target_id=None) for pos in gone])
        for (pos, plan), written in zip(gone.items(), made, strict=True):
            old = remake[pos][1]
            if isinstance(written, Written):
                written.detail = (
                    f"{remake[pos][2]}: {old.get('Status')} "
                    f"{old.get('InvoiceNumber') or old.get('CreditNoteNumber') or id_of(old)} "
                    f"is now {cancelled[pos]}, made again as {written.target_id}"
                )
                log.info("xero.remade", reference=plan.reference, old=id_of(old))
            out[pos] = written
        return out

    def _cancel_docs(self, docs: Mapping[int, dict[str, Any]]) -> dict[int, str | Exception]:
        """DELETED for drafts and submitted, VOIDED for approved unpaid; the new status."""
        out: dict[int, str | Exception] = {}
        for collection in COLLECTIONS:
            chosen = [(pos, d) for pos, d in docs.items() if collection_of(d) == collection]
            if not chosen:
                continue
            try:
                results = self.client.cancel(
                    collection,
                    version=_versions(d for _p, d in chosen),
                    docs=[
                        (id_of(d), str(d.get("Reference") or ""), str(d.get("Status")))
                        for _p, d in chosen
                    ],
                )
            except AmbiguousWriteError as exc:
                for pos, _d in chosen:
                    out[pos] = exc
                continue
            for (pos, doc), result in zip(chosen, results, strict=True):
                if result.ok and result.document is not None:
                    with self._lock:
                        self._ours.put({**doc, **result.document})
                    out[pos] = str(result.document.get("Status"))
                    continue
                message = "; ".join(result.errors)
                if any(m in message.lower() for m in (*_REFUSED_EDIT, "payment", "credit")):
                    out[pos] = TargetRefusedError(
                        id_of(doc), "refused", f"Xero refused: {message}", neutral(doc)
                    )
                else:
                    out[pos] = PermanentApiError(
                        "xero",
                        f"{doc.get('Reference')}: {message}",
                        method="POST",
                        path=f"/{collection}",
                    )
        return out

    def cancel(self, items: Sequence[Cancel]) -> list[Cancelled | Exception]:
        results: list[Cancelled | Exception | None] = [None] * len(items)
        current = self._current([str(item.target_id) for item in items])
        pending: dict[int, dict[str, Any]] = {}
        for pos, item in enumerate(items):
            doc = current.get(str(item.target_id))
            if doc is None:
                results[pos] = Cancelled(str(item.target_id), "DELETED", "not in Xero")
                continue
            status = str(doc.get("Status") or "")
            refused = self._refusal(doc)
            if refused is not None:
                results[pos] = refused
            elif status in CANCELLED:
                results[pos] = Cancelled(id_of(doc), status, f"already {status} in Xero")
            else:
                pending[pos] = doc
        for pos, outcome in self._cancel_docs(pending).items():
            if isinstance(outcome, Exception):
                results[pos] = outcome
            else:
                results[pos] = Cancelled(id_of(pending[pos]), outcome)
        return [r if r is not None else RuntimeError("no result") for r in results]

    def discard(self, reference: str, target_id: str) -> int:
        """Delete a draft this attempt made with wrong totals (never approved)."""
        with self._lock:
            doc = self._ours.find(str(target_id))
        if doc is None:
            doc = self._current([str(target_id)]).get(str(target_id))
        if doc is None or doc.get("Status") in CANCELLED:
            return 0
        outcome = self._cancel_docs({0: doc})[0]
        if isinstance(outcome, Exception):
            raise outcome
        return 1

    def find_one(self, reference: str) -> TargetInvoice | None:
        """Ours with this reference, read now (invoices, then credit notes)."""
        found: list[dict[str, Any]] = []
        for collection in COLLECTIONS:
            by_app = True if collection == INVOICES else None
            rows = self.client.find_by_references([reference], collection).get(reference, [])
            for row in rows:
                shown = self._remember(row, by_app=by_app)
                if shown["state"] in LIVE and self.carries_marker(shown, reference):
                    found.append(shown)
            if found:
                break
        if len(found) > 1:
            raise DuplicateInTargetError("Xero", reference, [f["id"] for f in found])
        return found[0] if found else None

    def sweep(self, reference: str) -> int:
        """0: a Xero push makes the document alone (the contact is kept for other invoices);
        a draft an unfinished push left is found and adopted by the next create."""
        return 0

    def sweep_late_writes(self, done: Callable[[str], bool]) -> int:
        """Delete our drafts of a done reference that are not the document the engine holds: a
        create that got no answer can be applied after its resend, and every create is a draft
        until verified, so a late one is a draft. The one held is the one this process last
        handed the engine, else (after a restart) the approved one; with neither known (drafts
        kept as drafts) nothing is deleted."""
        late: dict[int, dict[str, Any]] = {}
        for collection in COLLECTIONS:
            if collection == CREDIT_NOTES and self._credit_notes is False:
                continue
            for row in self.client.list_ours(collection, self.prefix, statuses=["DRAFT"]):
                shown = self._remember(row, by_app=True if collection == INVOICES else None)
                reference = str(shown.get("reference") or "")
                if shown["state"] != "DRAFT" or not self.carries_marker(shown, reference):
                    continue
                with self._lock:
                    held = self._held.get(reference)
                    approved = [
                        id_of(d)
                        for d in self._ours.live(collection, reference)
                        if d.get("Status") in ("AUTHORISED", "PAID")
                    ]
                keeper = held if held is not None else (approved[0] if len(approved) == 1 else None)
                if keeper is not None and keeper != shown["id"] and done(reference):
                    late[len(late)] = row
        if not late:
            return 0
        outcomes = self._cancel_docs(late)
        gone = sum(1 for o in outcomes.values() if not isinstance(o, Exception))
        log.info("xero.late_drafts_deleted", deleted=gone)
        return gone


class XeroIndex:
    """The connector's documents in Xero, listed in bulk at most once a cycle (a new or
    restored state file); `own` answers from it."""

    def __init__(self, *, wanted: bool) -> None:
        self.wanted = wanted
        self.loaded = False
        self.lock = threading.Lock()
        self.by_reference: dict[str, list[dict[str, Any]]] = {}
        self.by_id: dict[str, dict[str, Any]] = {}

    def load(self, invoices: Iterable[dict[str, Any]], prefix: str) -> int:
        count = 0
        for invoice in invoices:
            reference = invoice.get("reference")
            doc_id = str(invoice.get("id") or "")
            if not doc_id or not isinstance(reference, str):
                continue
            if prefix and not reference.startswith(prefix):
                continue
            if invoice.get("state") not in LIVE:
                continue
            self.by_reference.setdefault(reference, []).append(invoice)
            self.by_id[doc_id] = invoice
            count += 1
        self.loaded = True
        return count

    def own(
        self,
        reference: str,
        kantata_says: Any,
        owns: Callable[[dict[str, Any], str], bool],
    ) -> list[dict[str, Any]]:
        said = str(kantata_says) if kantata_says is not None else None
        found = {
            str(inv.get("id")): inv
            for inv in self.by_reference.get(reference, [])
            if str(inv.get("id")) == said or owns(inv, reference)
        }
        named = self.by_id.get(said) if said is not None else None
        if named is not None and named.get("reference") == reference and said is not None:
            found[said] = named
        return [inv for _key, inv in sorted(found.items())]


def _is_a_target(target: XeroTarget) -> Target:
    """mypy checks here that `XeroTarget` implements the whole `Target` protocol."""
    return target
