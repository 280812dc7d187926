"""Updating: edit in place (same id, the full line list with `LineItemID`s; an unpaid approved
document too), verify, approve what is still a draft. Only when Xero refuses to edit an
approved document (or the total changed sign: an invoice becomes a credit note) is the old one
voided and the document made again. A paid or part-paid document is never touched."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import structlog

from connector.errors import AmbiguousWriteError, PermanentApiError
from connector.targets.base import TargetGoneError, TargetRefusedError, Write, Written
from connector.targets.xero.cancel import REFUSED_EDIT, Read, cancel_docs
from connector.targets.xero.create import create
from connector.targets.xero.documents import (
    CANCELLED,
    COLLECTIONS,
    UNAPPROVED,
    collection_of,
    id_of,
    line_keys,
    versions,
)
from connector.targets.xero.writes import Parts, approve, item_error, refusal, written
from mappings.errors import MappingError
from mappings.targets.xero import XeroPlan, check_totals, parse_marker

log = structlog.get_logger(__name__)

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
"""The fields of a hand-made line sent back with an edit that keeps it."""


def edit_payload(
    plan: XeroPlan, doc: Mapping[str, Any], contact: str, force: bool
) -> tuple[dict[str, Any], str]:
    """(the edit's body, what it changes, for people)."""
    keys, foreign = line_keys(doc, plan.reference)
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


def update(parts: Parts, items: Sequence[Write], read: Read) -> list[Written | Exception]:
    """Change each item's document as Xero holds it now (`read`); one answer per item."""
    results: list[Written | Exception | None] = [None] * len(items)
    plans: dict[int, XeroPlan] = {}
    for pos, item in enumerate(items):
        if item.target_id is None:
            results[pos] = TargetGoneError("", "no Xero id to update")
            continue
        try:
            plans[pos] = parts.organisation.plan(item.doc)
        except MappingError as exc:
            results[pos] = exc
    current = read([str(items[pos].target_id) for pos in plans])
    edits: dict[int, tuple[XeroPlan, dict[str, Any]]] = {}
    remake: dict[int, tuple[XeroPlan, dict[str, Any], str]] = {}
    for pos, plan in plans.items():
        target_id = str(items[pos].target_id)
        doc = current.get(target_id)
        if doc is None:
            results[pos] = TargetGoneError(target_id, f"Xero has no document {target_id}")
            continue
        refused = refusal(doc)
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
    contacts = parts.contacts.for_docs({pos: items[pos].doc for pos in edits})
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
            body, detail = edit_payload(plan, doc, contact, items[pos].force)
            chosen.append((pos, plan, doc, body, detail))
        if not chosen:
            continue
        try:
            answers = parts.client.save(
                "POST", collection, [c[3] for c in chosen], versions(c[2] for c in chosen)
            )
        except AmbiguousWriteError as exc:
            for pos, *_rest in chosen:
                results[pos] = exc
            continue
        for (pos, plan, doc, _body, detail), result in zip(chosen, answers, strict=True):
            if result.ok and result.document is not None:
                with parts.ours.lock:
                    parts.ours.put(result.document)
                edited[pos] = (plan, dict(result.document), detail)
                continue
            message = "; ".join(result.errors).lower()
            if "payment" in message or "credit note" in message:
                # paid since it was read: never voided, never touched
                results[pos] = TargetRefusedError(
                    id_of(doc), "part_paid", f"Xero refused: {'; '.join(result.errors)}"
                )
            elif doc.get("Status") == "AUTHORISED" and any(m in message for m in REFUSED_EDIT):
                remake[pos] = (plan, doc, "Xero refused to edit the approved document")
            else:
                results[pos] = item_error(plan, result, "POST")
    to_approve: dict[int, tuple[XeroPlan, dict[str, Any]]] = {}
    checked: dict[int, tuple[XeroPlan, dict[str, Any], str, list[str]]] = {}
    for pos, (plan, doc, detail) in edited.items():
        problems = check_totals(plan, doc)
        checked[pos] = (plan, doc, detail, problems)
        if not problems and doc.get("Status") in UNAPPROVED and not parts.keep_drafts:
            to_approve[pos] = (plan, doc)
    approved = approve(parts, to_approve) if to_approve else {}
    for pos, (plan, doc, detail, problems) in checked.items():
        outcome = approved.get(pos, doc)
        if isinstance(outcome, Exception):
            results[pos] = outcome
        else:
            results[pos] = written(parts, plan, outcome, detail=detail, problems=problems)
    if remake:
        for pos, made in remade(parts, remake, items).items():
            results[pos] = made
    return [r if r is not None else RuntimeError("no result") for r in results]


def remade(
    parts: Parts, remake: dict[int, tuple[XeroPlan, dict[str, Any], str]], items: Sequence[Write]
) -> dict[int, Written | Exception]:
    """Void (or delete) each old document, then make it again: first the old one goes, so
    the books never hold two; one that cannot go is left as it is."""
    out: dict[int, Written | Exception] = {}
    gone: dict[int, XeroPlan] = {}
    cancelled = cancel_docs(parts, {pos: doc for pos, (_p, doc, _w) in remake.items()})
    for pos, outcome in cancelled.items():
        if isinstance(outcome, Exception):
            out[pos] = outcome
        else:
            gone[pos] = remake[pos][0]
    if not gone:
        return out
    made = create(parts, [replace(items[pos], target_id=None) for pos in gone])
    for (pos, plan), result in zip(gone.items(), made, strict=True):
        old = remake[pos][1]
        if isinstance(result, Written):
            result.detail = (
                f"{remake[pos][2]}: {old.get('Status')} "
                f"{old.get('InvoiceNumber') or old.get('CreditNoteNumber') or id_of(old)} "
                f"is now {cancelled[pos]}, made again as {result.target_id}"
            )
            log.info("xero.remade", reference=plan.reference, old=id_of(old))
        out[pos] = result
    return out
