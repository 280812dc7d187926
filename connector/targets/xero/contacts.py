"""Xero contacts for the Kantata customers: mapped by the profile, found, or created.

A customer's contact is the profile's `[xero.contacts]` entry (by Kantata client id or name),
else the contact whose `ContactNumber` is the Kantata client id (the ledger document's
`customer_id`), else the contact with the customer's name, unless that one carries another
client's number (two Kantata clients of one name are two contacts). Contacts are listed once a
process. Xero holds one active contact per name, so a second client of a name already taken is
made as "<name> (<client id>)".

A missing contact costs no request of its own on the create path: the new invoice carries it
by `Name` and `ContactNumber` (Xero takes the contact of that name or creates it, xero.md §4),
and the `ContactID` of Xero's answer is remembered. Whether Xero keeps the `ContactNumber` of a
contact made that way is not documented: an answer that shows the contact without it gets the
number set in one request for the batch (`fix_numbers`), and a contact that carries another
client's number makes the draft a problem (never approved). Where that path fails (Xero refuses
the contact), and for edits, the missing contacts are made first, in one batch.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import structlog

from connector.errors import AmbiguousWriteError, PermanentApiError
from connector.targets.xero.client import XeroClient
from mappings.ledger import LedgerDocument
from mappings.targets.xero_profile import XeroSettings

log = structlog.get_logger(__name__)

NUMBER_MAX = 50
"""Xero's longest `ContactNumber`."""
NAME_MAX = 255


class Contacts:
    """The organisation's active contacts by number and name, and the ones made here."""

    def __init__(self, client: XeroClient, settings: XeroSettings, lock: threading.RLock) -> None:
        self.client = client
        self.settings = settings
        self.lock = lock
        self._by_number: dict[str, str] = {}
        """ContactNumber -> ContactID."""
        self._by_name: dict[str, tuple[str, str]] | None = None
        """Lower-cased Name -> (ContactID, ContactNumber or ""); None: not listed yet."""
        self._sent: dict[str, dict[str, Any]] = {}
        """Contacts sent inside invoices whose ContactID is not known yet, by key (the client
        id, else the name): the same client gets the same body, and its name stays taken."""

    @staticmethod
    def customer(doc: LedgerDocument) -> tuple[str | None, str]:
        """(the Kantata client id as a ContactNumber, the contact name) of a ledger document."""
        client_id = (doc.customer_id or "").strip()[:NUMBER_MAX]
        name = (doc.customer_name or "").strip()[:NAME_MAX] or "Unknown customer"
        return client_id or None, name

    def known(self, doc: LedgerDocument) -> str | None:
        """The ContactID of the document's customer, when mapped or already listed."""
        client_id, name = self.customer(doc)
        mapped = self.settings.contact_for(client_id, name)
        if mapped is not None:
            return mapped
        with self.lock:
            if self._by_name is None:
                return None
            if client_id and client_id in self._by_number:
                return self._by_number[client_id]
            if client_id:
                # made here for this client under the "<name> (<client id>)" rule
                suffixed = self._by_name.get(self.suffixed(name, client_id).lower())
                if suffixed is not None and suffixed[1] in ("", client_id):
                    return suffixed[0]
            named = self._by_name.get(name.lower())
            if named is None:
                return None
            contact_id, number = named
            # by name: a contact made by hand (no number), or any when the client is unknown
            return contact_id if not number or client_id is None else None

    @staticmethod
    def suffixed(name: str, client_id: str) -> str:
        suffix = f" ({client_id})"
        return name[: NAME_MAX - len(suffix)] + suffix

    def _load(self) -> None:
        by_number: dict[str, str] = {}
        by_name: dict[str, tuple[str, str]] = {}
        for row in self.client.list_contacts():
            if str(row.get("ContactStatus") or "ACTIVE") != "ACTIVE" or not row.get("ContactID"):
                continue
            contact_id = str(row["ContactID"])
            number = str(row.get("ContactNumber") or "")
            if number:
                by_number[number] = contact_id
            by_name.setdefault(str(row.get("Name") or "").lower(), (contact_id, number))
        self._by_number, self._by_name = by_number, by_name
        self._sent = {}

    def _to_make(self, docs: Mapping[int, LedgerDocument]) -> tuple[dict[str, Any], dict[int, str]]:
        """(the contacts to create by key, the key each waiting item gets): one contact per
        client id (or per name without one), each under a name no active contact holds."""
        assert self._by_name is not None
        missing: dict[str, dict[str, Any]] = {}
        waiting: dict[int, str] = {}
        taken = set(self._by_name) | {str(b["Name"]).lower() for b in self._sent.values()}
        for pos, doc in docs.items():
            client_id, name = self.customer(doc)
            key = self.key(client_id, name)
            if key not in missing:
                body: dict[str, Any] | None = self._sent.get(key)
                if body is None:
                    body = {"Name": name}
                    if client_id:
                        body["ContactNumber"] = client_id
                        if name.lower() in taken:
                            body["Name"] = self.suffixed(name, client_id)
                    taken.add(str(body["Name"]).lower())
                missing[key] = body
            waiting[pos] = key
        return missing, waiting

    @staticmethod
    def key(client_id: str | None, name: str) -> str:
        return f"number:{client_id}" if client_id else f"name:{name.lower()}"

    def inline(self, docs: Mapping[int, LedgerDocument]) -> dict[int, str | dict[str, Any]]:
        """Per item the ContactID (mapped or found, listed once a process) or, for a customer
        Xero has no contact for yet, the `Contact` an invoice carries to make it: no request
        beyond the listing."""
        out: dict[int, str | dict[str, Any]] = {}
        with self.lock:
            if self._by_name is None:
                self._load()
            unknown: dict[int, LedgerDocument] = {}
            for pos, doc in docs.items():
                found = self.known(doc)
                if found is not None:
                    out[pos] = found
                else:
                    unknown[pos] = doc
            if unknown:
                missing, waiting = self._to_make(unknown)
                self._sent.update(missing)
                for pos, key in waiting.items():
                    out[pos] = dict(missing[key])
        return out

    def learn(self, doc: LedgerDocument, sent: Mapping[str, Any], answer: Any) -> tuple[str, bool]:
        """What an invoice that carried a new contact tells of it: (a problem, "" when none;
        whether the contact still needs its ContactNumber set). The ContactID is remembered."""
        client_id, name = self.customer(doc)
        if not isinstance(answer, Mapping) or not answer.get("ContactID"):
            return "", False  # nothing to remember: the next invoice carries it by name again
        contact_id = str(answer["ContactID"])
        number = answer.get("ContactNumber")
        number = str(number) if number is not None else None
        with self.lock:
            if number and client_id and number != client_id:
                self._by_name = None  # listed again by the next write
                return (
                    f"Xero put the invoice on contact {answer.get('Name')!r} of client "
                    f"{number}, not of client {client_id}",
                    False,
                )
            key = self.key(client_id, name)
            self._sent.pop(key, None)
            if client_id:
                self._by_number[client_id] = contact_id
            if self._by_name is not None:
                shown = str(answer.get("Name") or sent.get("Name") or name)
                self._by_name[shown.lower()] = (contact_id, client_id or "")
        return "", bool(client_id) and number != client_id

    def fix_numbers(self, fixes: Mapping[str, str]) -> None:
        """Set the ContactNumber (the client id) of contacts Xero made from an invoice without
        it, one request for all; a failure is logged, the invoices stand (they are on the
        right contact)."""
        if not fixes:
            return
        bodies = [{"ContactID": cid, "ContactNumber": num} for cid, num in fixes.items()]
        try:
            results = self.client.save("POST", "Contacts", bodies)
        except (AmbiguousWriteError, PermanentApiError) as exc:
            log.warning("xero.contact_numbers_not_set", contacts=len(bodies), error=str(exc))
            return
        for body, result in zip(bodies, results, strict=True):
            if not result.ok:
                log.warning(
                    "xero.contact_number_not_set",
                    contact=body["ContactID"],
                    error="; ".join(result.errors),
                )

    def for_docs(self, docs: Mapping[int, LedgerDocument]) -> dict[int, str | Exception]:
        """ContactID per item: mapped, found (listed once a process) or created (one batch)."""
        out: dict[int, str | Exception] = {}
        with self.lock:
            for attempt in range(2):
                if self._by_name is None:
                    self._load()
                unknown: dict[int, LedgerDocument] = {}
                for pos, doc in docs.items():
                    if pos in out:
                        continue
                    found = self.known(doc)
                    if found is not None:
                        out[pos] = found
                    else:
                        unknown[pos] = doc
                if not unknown:
                    return out
                missing, waiting = self._to_make(unknown)
                keys = list(missing)
                try:
                    results = self.client.save("PUT", "Contacts", [missing[k] for k in keys])
                except AmbiguousWriteError:
                    if attempt:
                        raise
                    self._by_name = None  # a new listing finds what was made
                    continue
                refused: dict[str, str] = {}
                made: dict[str, str] = {}
                assert self._by_name is not None
                for key, result in zip(keys, results, strict=True):
                    if result.ok and result.document is not None:
                        contact_id = str(result.document["ContactID"])
                        made[key] = contact_id
                        number = str(missing[key].get("ContactNumber") or "")
                        if number:
                            self._by_number[number] = contact_id
                        name = str(missing[key]["Name"]).lower()
                        self._by_name[name] = (contact_id, number)
                    else:
                        refused[key] = "; ".join(result.errors)
                for pos, key in waiting.items():
                    if key in made:
                        out[pos] = made[key]
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
                self._by_name = None  # made by hand since the listing: list again once
        return out
