"""Xero contacts for the Kantata customers: mapped by the profile, found, or created.

A customer's contact is the profile's `[xero.contacts]` entry (by Kantata client id or name),
else the contact whose `ContactNumber` is the Kantata client id (the ledger document's
`customer_id`), else the contact with the customer's name, unless that one carries another
client's number (two Kantata clients of one name are two contacts). Contacts are listed once a
process; the missing ones are made in one batch with `ContactNumber` = the client id. Xero
holds one active contact per name, so a second client of a name already taken is made as
"<name> (<client id>)".
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from connector.errors import AmbiguousWriteError, PermanentApiError
from connector.targets.xero.client import XeroClient
from mappings.ledger import LedgerDocument
from mappings.targets.xero_profile import XeroSettings

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
            named = self._by_name.get(name.lower())
            if named is None:
                return None
            contact_id, number = named
            # by name: a contact made by hand (no number), or any when the client is unknown
            return contact_id if not number or client_id is None else None

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

    def _to_make(self, docs: Mapping[int, LedgerDocument]) -> tuple[dict[str, Any], dict[int, str]]:
        """(the contacts to create by key, the key each waiting item gets): one contact per
        client id (or per name without one), each under a name no active contact holds."""
        assert self._by_name is not None
        missing: dict[str, dict[str, Any]] = {}
        waiting: dict[int, str] = {}
        taken = set(self._by_name)
        for pos, doc in docs.items():
            client_id, name = self.customer(doc)
            key = f"number:{client_id}" if client_id else f"name:{name.lower()}"
            if key not in missing:
                body: dict[str, Any] = {"Name": name}
                if client_id:
                    body["ContactNumber"] = client_id
                    if name.lower() in taken:
                        suffix = f" ({client_id})"
                        body["Name"] = name[: NAME_MAX - len(suffix)] + suffix
                taken.add(str(body["Name"]).lower())
                missing[key] = body
            waiting[pos] = key
        return missing, waiting

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
