"""Xero contacts for the Kantata customers: mapped by the profile, found, or created.

A customer's contact is the profile's `[xero.contacts]` entry, else the contact whose
`ContactNumber` is the client id, else the one with the customer's name. Contacts are listed
once a process; the missing ones are made in one batch.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from connector.errors import AmbiguousWriteError, PermanentApiError
from connector.targets.xero.client import XeroClient
from mappings.ledger import LedgerDocument
from mappings.targets.xero_profile import XeroSettings


class Contacts:
    """The organisation's active contacts by number and name, and the ones made here."""

    def __init__(self, client: XeroClient, settings: XeroSettings, lock: threading.RLock) -> None:
        self.client = client
        self.settings = settings
        self.lock = lock
        self._table: dict[str, str] | None = None
        """Lower-cased `number:<ContactNumber>` / `name:<Name>` -> ContactID."""

    @staticmethod
    def customer(doc: LedgerDocument) -> tuple[str | None, str]:
        """(the Kantata client id, the contact name) of a ledger document."""
        client_id = getattr(doc, "client_id", None)
        name = (doc.customer_name or "").strip()[:255] or "Unknown customer"
        return (str(client_id) if client_id else None), name

    def known(self, doc: LedgerDocument) -> str | None:
        """The ContactID of the document's customer, when mapped or already listed."""
        client_id, name = self.customer(doc)
        mapped = self.settings.contact_for(client_id, name)
        if mapped is not None:
            return mapped
        with self.lock:
            if self._table is None:
                return None
            found = self._table.get(f"number:{client_id}") if client_id else None
            return found or self._table.get(f"name:{name.lower()}")

    def _load(self) -> None:
        rows = self.client.list_contacts()
        table: dict[str, str] = {}
        for row in rows:
            if str(row.get("ContactStatus") or "ACTIVE") != "ACTIVE" or not row.get("ContactID"):
                continue
            if row.get("ContactNumber"):
                table[f"number:{row['ContactNumber']}"] = str(row["ContactID"])
            table.setdefault(f"name:{str(row.get('Name') or '').lower()}", str(row["ContactID"]))
        self._table = table

    def for_docs(self, docs: Mapping[int, LedgerDocument]) -> dict[int, str | Exception]:
        """ContactID per item: mapped, found (listed once a process) or created (one batch)."""
        out: dict[int, str | Exception] = {}
        with self.lock:
            for attempt in range(2):
                if self._table is None:
                    self._load()
                missing: dict[str, dict[str, Any]] = {}
                waiting: dict[int, str] = {}
                for pos, doc in docs.items():
                    if pos in out:
                        continue
                    found = self.known(doc)
                    if found is not None:
                        out[pos] = found
                        continue
                    client_id, name = self.customer(doc)
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
                    self._table = None  # a new listing finds what was made
                    continue
                refused: dict[str, str] = {}
                assert self._table is not None
                for key, result in zip(keys, results, strict=True):
                    if result.ok and result.document is not None:
                        contact_id = str(result.document["ContactID"])
                        self._table[f"name:{key}"] = contact_id
                        number = missing[key].get("ContactNumber")
                        if number:
                            self._table[f"number:{number}"] = contact_id
                    else:
                        refused[key] = "; ".join(result.errors)
                for pos, key in waiting.items():
                    if key not in refused:
                        out[pos] = self._table[f"name:{key}"]
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
                self._table = None  # made by hand since the listing: list again once
        return out
