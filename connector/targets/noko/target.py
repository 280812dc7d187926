"""Noko as a `Target`: the reading half of the interface, over the client and the index."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, overload

from connector.targets.base import TargetIndex, TargetInvoice
from connector.targets.noko.client import NokoClient
from connector.targets.noko.index import NokoIndex
from connector.targets.noko.push import ENTRY_KEY, NokoPusher
from mappings.ledger import LedgerDocument
from mappings.targets.noko import check_totals, is_ours, plan_invoice


class NokoTarget:
    """Noko's v2 invoice API behind the `Target` interface."""

    name = "Noko"

    def __init__(self, client: NokoClient) -> None:
        self.client = client
        self.pusher = NokoPusher(client)

    def find(self, prefix: str) -> Iterator[dict[str, Any]]:
        # Noko's `reference` filter is "contains": the caller keeps exact matches only.
        listing = self.client.list_invoices({"reference": prefix} if prefix else {})
        return (_neutral(invoice) for invoice in listing)

    def get(self, target_id: str) -> dict[str, Any] | None:
        noko_id = _int(target_id)
        if noko_id is None:
            return None  # not an id Noko can have
        return _neutral(self.client.get_invoice(noko_id))

    def changes_since(
        self,
        since: datetime | None,
        *,
        on_server_time: Callable[[datetime | None], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {}
        if since is not None:
            if since.tzinfo is None or since.utcoffset() is None:
                raise ValueError("timestamps sent to Noko must be timezone-aware")
            # Whole seconds, the fraction dropped: the window widens, never narrows.
            params["updated_from"] = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        listing = self.client.list_invoices(params, on_server_time=on_server_time)
        return (_neutral(invoice) for invoice in listing)

    def new_index(self, *, wanted: bool) -> TargetIndex:
        return NokoIndex(wanted=wanted)

    def link(self, invoice: TargetInvoice) -> str | None:
        """The invoice's `share_url`. Never its API `url`, which answers only with a token."""
        url = invoice.get("share_url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            return url
        return None

    def carries_marker(self, invoice: TargetInvoice, reference: str) -> bool:
        return is_ours(invoice, reference)

    def as_asked(self, doc: LedgerDocument, invoice: TargetInvoice) -> bool:
        plan = plan_invoice(doc)
        if check_totals(plan, invoice):
            return False
        for key, wanted in (("expenses", len(plan.expenses)), ("entries", len(plan.entries))):
            got = _int(invoice.get(key))
            if got is not None and got != wanted:
                return False
        return True

    def line_drift(self, invoice: TargetInvoice, pushed: Sequence[str]) -> list[str]:
        problems = []
        for label, wanted, count in (
            ("expenses", sum(1 for k in pushed if not k.startswith(ENTRY_KEY)), "expenses"),
            ("time entries", sum(1 for k in pushed if k.startswith(ENTRY_KEY)), "entries"),
        ):
            got = _int(invoice.get(count))
            if got is not None and got != wanted:
                problems.append(f"{got} {label}, pushed {wanted}")
        return problems


@overload
def _neutral(invoice: dict[str, Any]) -> dict[str, Any]: ...
@overload
def _neutral(invoice: None) -> None: ...
def _neutral(invoice: dict[str, Any] | None) -> dict[str, Any] | None:
    """Noko's invoice with the neutral fields the engine reads: `id` as text, `paid`."""
    if invoice is None:
        return None
    out = dict(invoice)
    if out.get("id") is not None:
        out["id"] = str(out["id"])
    out["paid"] = str(out.get("state") or "") == "paid"
    return out


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
