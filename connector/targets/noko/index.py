"""The connector's invoices in Noko, listed in bulk to match a new or restored state file."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any


class NokoIndex:
    """The connector's invoices in Noko, listed in bulk (1,000 a request) at most once a cycle,
    and only in a cycle where the state file may not know everything Noko holds: a new state
    file (no cursor yet), or one older than Noko (a Kantata invoice carries our reference to a
    Noko invoice the state file does not have). Before anything is created for an invoice
    without a Noko id, it is looked for here, so a lost or restored state file never duplicates.

    Only invoices whose reference starts with the profile's prefix are kept, each as its scalar
    fields (no line lists): enough to compare totals and header with what Kantata asks for."""

    def __init__(
        self, *, wanted: bool, owns: Callable[[dict[str, Any], str], bool] | None = None
    ) -> None:
        self.wanted = wanted
        self.owns = owns
        """Noko's full proof that an invoice is the connector's (used instead of the caller's)."""
        self.loaded = False
        self.lock = threading.Lock()
        self.by_reference: dict[str, list[dict[str, Any]]] = {}
        self.by_id: dict[str, dict[str, Any]] = {}

    def load(self, invoices: Iterable[dict[str, Any]], prefix: str) -> int:
        count = 0
        for invoice in invoices:
            reference = invoice.get("reference")
            noko_id = _text(invoice.get("id"))
            if noko_id is None or not isinstance(reference, str):
                continue
            if prefix and not reference.startswith(prefix):
                continue
            slim = {k: v for k, v in invoice.items() if not isinstance(v, list)}
            self.by_reference.setdefault(reference, []).append(slim)
            self.by_id[noko_id] = slim
            count += 1
        self.loaded = True
        return count

    def own(
        self,
        reference: str,
        kantata_says: str | None,
        owns: Callable[[dict[str, Any], str], bool],
    ) -> list[dict[str, Any]]:
        """The connector's invoices for `reference`: those `owns` proves (the owner marker;
        the index's own proof when it has one), and the one its Kantata reference names
        (`kantata_says`) when that carries it."""
        owns = self.owns or owns
        found = {
            _text(inv.get("id")): inv
            for inv in self.by_reference.get(reference, [])
            if _text(inv.get("id")) == kantata_says or owns(inv, reference)
        }
        named = self.by_id.get(kantata_says) if kantata_says is not None else None
        if named is not None and named.get("reference") == reference:
            found[kantata_says] = named
        # Oldest first: Noko's ids grow, so the shorter text is the smaller number.
        ordered = sorted(found.items(), key=lambda kv: (len(kv[0] or ""), kv[0] or ""))
        return [inv for _, inv in ordered]


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    return str(value).strip() or None
