"""Cancelling: `DELETED` for drafts and submitted documents, `VOIDED` for approved unpaid ones;
a paid or part-paid document is never touched. Also the deletion of drafts a push left behind
(wrong totals, or a create applied late after its resend)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from connector.errors import AmbiguousWriteError, PermanentApiError
from connector.targets.base import Cancel, Cancelled, TargetRefusedError
from connector.targets.xero.documents import (
    CANCELLED,
    COLLECTIONS,
    CREDIT_NOTES,
    INVOICES,
    collection_of,
    id_of,
    neutral,
    versions,
)
from connector.targets.xero.writes import Parts, refusal

log = structlog.get_logger(__name__)

REFUSED_EDIT = ("valid status for modification", "cannot be edited")
"""What Xero says when a document's status does not allow the change."""

Read = Callable[[Sequence[str]], dict[str, dict[str, Any]]]
"""The documents as Xero holds them now, by id (`Ours.current`)."""


def cancel_docs(parts: Parts, docs: Mapping[int, dict[str, Any]]) -> dict[int, str | Exception]:
    """DELETED for drafts and submitted, VOIDED for approved unpaid; the new status."""
    out: dict[int, str | Exception] = {}
    for collection in COLLECTIONS:
        chosen = [(pos, d) for pos, d in docs.items() if collection_of(d) == collection]
        if not chosen:
            continue
        try:
            results = parts.client.cancel(
                collection,
                version=versions(d for _p, d in chosen),
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
                with parts.ours.lock:
                    parts.ours.put({**doc, **result.document})
                out[pos] = str(result.document.get("Status"))
                continue
            message = "; ".join(result.errors)
            if any(m in message.lower() for m in (*REFUSED_EDIT, "payment", "credit")):
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


def cancel(parts: Parts, items: Sequence[Cancel], read: Read) -> list[Cancelled | Exception]:
    """Cancel each item's document as Xero holds it now; one answer per item."""
    results: list[Cancelled | Exception | None] = [None] * len(items)
    current = read([str(item.target_id) for item in items])
    pending: dict[int, dict[str, Any]] = {}
    for pos, item in enumerate(items):
        doc = current.get(str(item.target_id))
        if doc is None:
            results[pos] = Cancelled(str(item.target_id), "DELETED", "not in Xero")
            continue
        status = str(doc.get("Status") or "")
        refused = refusal(doc)
        if refused is not None:
            results[pos] = refused
        elif status in CANCELLED:
            results[pos] = Cancelled(id_of(doc), status, f"already {status} in Xero")
        else:
            pending[pos] = doc
    for pos, outcome in cancel_docs(parts, pending).items():
        if isinstance(outcome, Exception):
            results[pos] = outcome
        else:
            results[pos] = Cancelled(id_of(pending[pos]), outcome)
    return [r if r is not None else RuntimeError("no result") for r in results]


def discard(parts: Parts, target_id: str, read: Read) -> int:
    """Delete a draft this attempt made with wrong totals (never approved)."""
    with parts.ours.lock:
        doc = parts.ours.find(str(target_id))
    if doc is None:
        doc = read([str(target_id)]).get(str(target_id))
    if doc is None or doc.get("Status") in CANCELLED:
        return 0
    outcome = cancel_docs(parts, {0: doc})[0]
    if isinstance(outcome, Exception):
        raise outcome
    return 1


def delete_late_drafts(parts: Parts, done: Callable[[str], bool]) -> int:
    """Delete our drafts of a done reference that are not the document the engine holds: a
    create that got no answer can be applied after its resend, and every create is a draft
    until verified, so a late one is a draft. The one held is the one this process last
    handed the engine, else (after a restart) the approved one; with neither known (drafts
    kept as drafts) nothing is deleted."""
    ours = parts.ours
    late: dict[int, dict[str, Any]] = {}
    for collection in COLLECTIONS:
        if collection == CREDIT_NOTES and ours.credit_notes is False:
            continue
        for row in parts.client.list_ours(collection, ours.prefix, statuses=["DRAFT"]):
            shown = ours.remember(row, by_app=True if collection == INVOICES else None)
            reference = str(shown.get("reference") or "")
            if shown["state"] != "DRAFT" or not ours.carries_marker(shown, reference):
                continue
            with ours.lock:
                held = ours.held.get(reference)
                approved = [
                    id_of(d)
                    for d in ours.live(collection, reference)
                    if d.get("Status") in ("AUTHORISED", "PAID")
                ]
            keeper = held if held is not None else (approved[0] if len(approved) == 1 else None)
            if keeper is not None and keeper != shown["id"] and done(reference):
                late[len(late)] = row
    if not late:
        return 0
    outcomes = cancel_docs(parts, late)
    gone = sum(1 for o in outcomes.values() if not isinstance(o, Exception))
    log.info("xero.late_drafts_deleted", deleted=gone)
    return gone
