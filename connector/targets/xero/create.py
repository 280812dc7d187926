"""Creating: drafts 50 to a request, each checked to the minor unit, then approved.

Before anything is made, the references are looked up in what the process has listed of ours
(`documents.Ours`): a live document of ours is adopted, not made again. Contacts come first
(`contacts.py`). A draft whose totals are wrong is left unapproved and reported
(`Written.problems`): the engine discards it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from connector.errors import AmbiguousWriteError, PermanentApiError
from connector.targets.base import DuplicateInTargetError, Write, Written
from connector.targets.xero.documents import COLLECTIONS, CREDIT_NOTES, UNAPPROVED, id_of
from connector.targets.xero.writes import Parts, approve, item_error, written
from mappings.errors import MappingError
from mappings.ledger import LedgerDocument
from mappings.targets.xero import XeroPlan, check_totals

log = structlog.get_logger(__name__)


def make_drafts(
    parts: Parts, plans: dict[int, XeroPlan], docs: Mapping[int, LedgerDocument]
) -> dict[int, dict[str, Any] | Exception]:
    """Create drafts of the plans (contacts first), one request per collection and 50."""
    out: dict[int, dict[str, Any] | Exception] = {}
    ours = parts.ours
    contacts = parts.contacts.for_docs({pos: docs[pos] for pos in plans})
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
        with ours.lock:
            earlier = {plan.reference: ours.all(plan.reference) for _p, plan, _b in chosen}
        made_before = ";".join(
            f"{ref}:{','.join(sorted(id_of(d) for d in docs))}"
            for ref, docs in earlier.items()
            if docs
        )
        try:
            results = parts.client.save(
                "PUT", collection, [body for _p, _pl, body in chosen], made_before
            )
        except AmbiguousWriteError as exc:
            ours.forget_listing(collection)
            for pos, _plan, _body in chosen:
                out[pos] = exc
            continue
        for (pos, plan, _body), result in zip(chosen, results, strict=True):
            if result.ok and result.document is not None:
                with ours.lock:
                    ours.put(result.document)
                    if collection == CREDIT_NOTES:
                        ours.credit_notes = True
                out[pos] = dict(result.document)
            else:
                out[pos] = item_error(plan, result, "PUT")
    return out


def create(parts: Parts, items: Sequence[Write]) -> list[Written | Exception]:
    """Make (or adopt) each item's document; one answer per item."""
    results: list[Written | Exception | None] = [None] * len(items)
    plans: dict[int, XeroPlan] = {}
    for pos, item in enumerate(items):
        try:
            plans[pos] = parts.organisation.plan(item.doc)
        except MappingError as exc:
            results[pos] = exc
    if plans:
        # the organisation's short code, read once, before writing
        parts.organisation.link({"id": "-"})
    ours = parts.ours
    ours.ensure_listed(p.collection for p in plans.values())
    adopted: dict[int, dict[str, Any]] = {}
    to_make: dict[int, XeroPlan] = {}
    with ours.lock:
        for pos, plan in plans.items():
            live = ours.live(plan.collection, plan.reference)
            if len(live) > 1:
                results[pos] = DuplicateInTargetError(
                    "Xero", plan.reference, [id_of(d) for d in live]
                )
            elif live:
                adopted[pos] = dict(live[0])
            else:
                to_make[pos] = plan
    made = make_drafts(parts, to_make, {pos: items[pos].doc for pos in to_make}) if to_make else {}
    checked: dict[int, tuple[XeroPlan, dict[str, Any], list[str]]] = {}
    for pos, outcome in made.items():
        if isinstance(outcome, Exception):
            results[pos] = outcome
        else:
            checked[pos] = (plans[pos], outcome, check_totals(plans[pos], outcome))
    for pos, doc in adopted.items():
        log.info("xero.adopted", reference=plans[pos].reference, id=id_of(doc))
        checked[pos] = (plans[pos], doc, check_totals(plans[pos], doc))
    to_approve = {
        pos: (plan, doc)
        for pos, (plan, doc, problems) in checked.items()
        if not problems and doc.get("Status") in UNAPPROVED and not parts.keep_drafts
    }
    approved = approve(parts, to_approve) if to_approve else {}
    for pos, (plan, doc, problems) in checked.items():
        outcome = approved.get(pos, doc)
        if isinstance(outcome, Exception):
            results[pos] = outcome
            continue
        if problems:
            log.warning("xero.wrong_totals", reference=plan.reference, problems=problems)
        results[pos] = written(
            parts,
            plan,
            outcome,
            adopted=pos in adopted,
            created=pos in made,
            problems=problems,
            detail="found in Xero from an earlier attempt" if pos in adopted else "",
        )
    return [r if r is not None else RuntimeError("no result") for r in results]
