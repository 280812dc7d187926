"""Xero as a `Target`: sales invoices (and credit notes) 50 to a request, verified, then approved.

The parts, each in its own module of this package:
- `documents.py`: Xero's fields read into the neutral ones, and the documents of ours this
  process has seen, indexed by reference (the look-up before creating);
- `organisation.py`: tax rates, accounts and short code (read once), plans checked against
  them, deep links;
- `contacts.py`: the contact of each Kantata customer, found or created;
- `create.py`, `update.py`, `cancel.py` (sharing `writes.py`): the batch writes, verified and
  approved.

This module is the facade the engine holds, and the reads. `find` and `changes_since` list the
connector's documents 1,000 to a request: invoices made by this app (`createdByMyApp=true`)
with our reference prefix, credit notes by reference and our line markers (Xero has no app
filter for them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from connector.targets.base import (
    Cancel,
    Cancelled,
    DuplicateInTargetError,
    Target,
    TargetInvoice,
    Write,
    Written,
)
from connector.targets.xero import cancel, create, update
from connector.targets.xero.client import BATCH, XeroClient
from connector.targets.xero.contacts import Contacts
from connector.targets.xero.documents import (
    COLLECTIONS,
    CREDIT_NOTES,
    INVOICES,
    LIVE,
    Ours,
    XeroIndex,
    collection_of,
    day_of,
    line_keys,
    parse_xero_time,
)
from connector.targets.xero.organisation import Organisation
from connector.targets.xero.writes import Parts
from mappings.errors import MappingError
from mappings.ledger import LedgerDocument
from mappings.targets.xero import REFERENCE_PREFIX, check_totals
from mappings.targets.xero_profile import XeroSettings


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
        self.kantata_service = kantata_service
        """How Kantata is named in messages."""
        self.prefix = prefix
        lock = threading.RLock()
        self.ours = Ours(client, prefix, lock)
        self.organisation = Organisation(client, settings, lock)
        self.contacts = Contacts(client, settings, lock)
        self.parts = Parts(client, settings, self.ours, self.organisation, self.contacts)

    @property
    def settings(self) -> XeroSettings:
        """The profile's `[xero]` section; a new one is used from the next call on."""
        return self.parts.settings

    @settings.setter
    def settings(self, value: XeroSettings) -> None:
        self.organisation.settings = value
        self.contacts.settings = value
        self.parts = replace(self.parts, settings=value)

    # ================================================================== reads

    def find(self, prefix: str) -> Iterator[dict[str, Any]]:
        for collection in COLLECTIONS:
            yield from self.ours.list(collection, prefix)

    def get(self, target_id: str) -> dict[str, Any] | None:
        target_id = str(target_id)
        with self.ours.lock:
            known = self.ours.find(target_id)
        note = known is not None and collection_of(known) == CREDIT_NOTES
        for collection in (CREDIT_NOTES, INVOICES) if note else COLLECTIONS:
            doc = self.client.get_document(collection, target_id)
            if doc is not None:
                return self.ours.remember(doc, by_app=None)
        return None

    def expect_credits(self, known: bool) -> None:
        """The engine's word on whether its books hold credits (credit notes here): when not,
        the change poll reads invoices alone (a quiet cycle is one request). A credit note made
        or seen by this process counts whatever is said."""
        with self.ours.lock:
            if not self.ours.credit_notes:
                self.ours.credit_notes = known

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
            yield from self._everything(on_server_time, clock)
            return
        for row in self.client.changed_since(since, INVOICES, on_answer=clock):
            yield self.ours.remember(row, by_app=True)
        with self.ours.lock:
            known = self.ours.credit_notes
        if known is None:
            yield from (
                d
                for d in self.ours.list(CREDIT_NOTES, self.prefix)
                if (parse_xero_time(d.get("UpdatedDateUTC")) or since) >= since
            )
        elif known:
            for row in self.client.changed_since(since, CREDIT_NOTES):
                yield self.ours.remember(row, by_app=None)

    def _everything(
        self,
        on_server_time: Callable[[datetime | None], None] | None,
        clock: Callable[[Mapping[str, Any]], None],
    ) -> Iterator[dict[str, Any]]:
        """All of ours (a first cycle: no cursor yet). A collection this process listed in full
        at Xero's time T, and wrote only with answers it kept since, is answered from memory
        with T as the server time: the engine's next read is `If-Modified-Since` T, which
        brings whatever changed since the listing (a hand edit, a write left in doubt). The
        earliest of the times used is reported, first."""
        invoices = self.ours.recalled(INVOICES)
        notes = self.ours.recalled(CREDIT_NOTES)
        times = [r[0] for r in (invoices, notes) if r is not None]
        if times and on_server_time is not None:
            on_server_time(min(times))
        if invoices is not None:
            yield from invoices[1]
        else:
            yield from self.ours.list(INVOICES, self.prefix, on_answer=clock)
        if notes is not None:
            yield from notes[1]
        else:
            yield from self.ours.list(CREDIT_NOTES, self.prefix)

    def new_index(self, *, wanted: bool) -> XeroIndex:
        return XeroIndex(wanted=wanted)

    def find_one(self, reference: str) -> TargetInvoice | None:
        """Ours with this reference, read now (invoices, then credit notes)."""
        found: list[dict[str, Any]] = []
        for collection in COLLECTIONS:
            by_app = True if collection == INVOICES else None
            rows = self.client.find_by_references([reference], collection).get(reference, [])
            for row in rows:
                shown = self.ours.remember(row, by_app=by_app)
                if shown["state"] in LIVE and self.carries_marker(shown, reference):
                    found.append(shown)
            if found:
                break
        if len(found) > 1:
            raise DuplicateInTargetError("Xero", reference, [f["id"] for f in found])
        return found[0] if found else None

    def _current(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The documents as Xero holds them now (what updates and cancels start from)."""
        return self.ours.current(ids)

    # ================================================================== links and comparisons

    def short_code(self) -> str:
        return self.organisation.short_code()

    def link(self, invoice: TargetInvoice) -> str | None:
        """The deep link into the organisation (its ShortCode, read once)."""
        return self.organisation.link(invoice)

    def carries_marker(self, invoice: TargetInvoice, reference: str) -> bool:
        """Ours: our reference, and made by this app (an invoice listed under `createdByMyApp`
        or written by us) or, shown by its lines, our marker on each of them."""
        return self.ours.carries_marker(invoice, reference)

    def as_asked(self, doc: LedgerDocument, invoice: TargetInvoice) -> bool:
        try:
            plan = self.organisation.plan(doc, check=False)
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
        keys, foreign = line_keys(invoice, reference)
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
            plan = self.organisation.plan(doc, check=False)
        except MappingError:
            return True
        if invoice.get("CurrencyCode") not in (None, plan.currency):
            return True
        if invoice.get("Type") not in (None, plan.type):
            return True
        if day_of(invoice.get("Date")) != date.fromisoformat(plan.date):
            return True
        if plan.due_date is not None and day_of(invoice.get("DueDate")) != date.fromisoformat(
            plan.due_date
        ):
            return True
        contact = invoice.get("Contact")
        if isinstance(contact, Mapping):
            wanted = self.contacts.known(doc)
            if wanted is not None and contact.get("ContactID"):
                return str(contact.get("ContactID")) != wanted
        return False

    # ================================================================== writes

    def create(self, items: Sequence[Write]) -> list[Written | Exception]:
        return create.create(self.parts, items)

    def update(self, items: Sequence[Write]) -> list[Written | Exception]:
        return update.update(self.parts, items, self._current)

    def cancel(self, items: Sequence[Cancel]) -> list[Cancelled | Exception]:
        return cancel.cancel(self.parts, items, self._current)

    def discard(self, reference: str, target_id: str) -> int:
        """Delete a draft this attempt made with wrong totals (never approved)."""
        return cancel.discard(self.parts, target_id, self._current)

    def sweep(self, reference: str) -> int:
        """0: a Xero push makes the document alone (the contact is kept for other invoices);
        a draft an unfinished push left is found and adopted by the next create."""
        return 0

    def sweep_late_writes(self, done: Callable[[str], bool]) -> int:
        """Delete our drafts of a done reference that are not the document the engine holds
        (see `cancel.delete_late_drafts`)."""
        return cancel.delete_late_drafts(self.parts, done)


def _is_a_target(target: XeroTarget) -> Target:
    """mypy checks here that `XeroTarget` implements the whole `Target` protocol."""
    return target
