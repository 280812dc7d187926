"""What every Xero write shares: the parts it works with, the approval of verified drafts,
and the answer per item (a `Written`, a refusal, or the error Xero gave).

Creates are `create.py`, edits `update.py`, voids and deletions `cancel.py`. Each takes a
batch (at most 50 a request, `summarizeErrors=false`, an `Idempotency-Key` naming the body: see
`client.py`) and answers each item on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector.errors import AmbiguousWriteError, PermanentApiError
from connector.targets.base import TargetRefusedError, Written
from connector.targets.xero.client import XeroClient, XeroResult
from connector.targets.xero.contacts import Contacts
from connector.targets.xero.documents import (
    COLLECTIONS,
    INVOICES,
    Ours,
    id_of,
    neutral,
    settled_part,
    versions,
)
from connector.targets.xero.organisation import Organisation
from mappings.errors import MappingError
from mappings.targets.xero import XeroPlan
from mappings.targets.xero_profile import XeroSettings


@dataclass(frozen=True)
class Parts:
    """The collaborators a write works with (one set per `XeroTarget`)."""

    client: XeroClient
    settings: XeroSettings
    ours: Ours
    organisation: Organisation
    contacts: Contacts

    @property
    def keep_drafts(self) -> bool:
        return self.settings.keep_as_draft


def item_error(plan: XeroPlan, result: XeroResult, method: str) -> Exception:
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


def written(
    parts: Parts,
    plan: XeroPlan,
    doc: Mapping[str, Any],
    *,
    adopted: bool = False,
    created: bool = False,
    detail: str = "",
    problems: list[str] | None = None,
) -> Written:
    shown = neutral(doc, by_app=True if plan.collection == INVOICES else None)
    with parts.ours.lock:
        parts.ours.held[plan.reference] = shown["id"]
    return Written(
        invoice=shown,
        target_id=shown["id"],
        link=parts.organisation.link(shown),
        state=shown["state"],
        lines=None if adopted else [line.key for line in plan.lines],
        adopted=adopted,
        created=created,
        problems=list(problems or []),
        detail=detail,
    )


def refusal(doc: Mapping[str, Any]) -> TargetRefusedError | None:
    """A paid or part-paid document is never changed."""
    status = str(doc.get("Status") or "")
    doc_id = id_of(doc)
    number = doc.get("InvoiceNumber") or doc.get("CreditNoteNumber") or doc_id
    if status == "PAID":
        return TargetRefusedError(
            doc_id, "PAID", f"Xero {number} is paid: never changed", neutral(doc)
        )
    if settled_part(doc):
        return TargetRefusedError(
            doc_id,
            "part_paid",
            f"Xero {number} has a payment or credit allocated: never changed",
            neutral(doc),
        )
    return None


def approve(
    parts: Parts, docs: dict[int, tuple[XeroPlan, dict[str, Any]]]
) -> dict[int, dict[str, Any] | Exception]:
    """Approve verified drafts, one request per collection and 50; the answers by item."""
    out: dict[int, dict[str, Any] | Exception] = {}
    for collection in COLLECTIONS:
        chosen = [(pos, p, d) for pos, (p, d) in docs.items() if p.collection == collection]
        if not chosen:
            continue
        try:
            results = parts.client.approve(
                collection,
                [(id_of(d), p.reference) for _pos, p, d in chosen],
                versions(d for _pos, _p, d in chosen),
            )
        except AmbiguousWriteError as exc:
            parts.ours.forget_listing(collection)
            for pos, _p, _d in chosen:
                out[pos] = exc
            continue
        for (pos, plan, doc), result in zip(chosen, results, strict=True):
            if result.ok and result.document is not None:
                merged = {**doc, **result.document}
                with parts.ours.lock:
                    parts.ours.put(merged)
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
