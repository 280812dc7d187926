"""`reconcile`: compare Kantata, Noko and the state store for a window, and repair what is safe.

Read-only unless asked to apply. Differences found:
  missing_in_noko     eligible Kantata invoice without a Noko invoice
  total_mismatch      Noko total differs from the Kantata total
  duplicate_in_noko   several Noko invoices carry one reference (never repaired automatically)
  not_in_kantata      a Noko invoice with our reference whose Kantata invoice is a draft,
                      cancelled, or unknown
  reference_missing   in Noko, but the Kantata invoice has no successful reference to it
  conflict            the store holds an unresolved conflict
  unmappable          Kantata's record cannot be read or mapped (a field named in the detail);
                      with the Noko invoice it already has, if any (never repaired automatically:
                      fix the field in Kantata)
  deleted_in_kantata  pushed, then deleted in Kantata: its Noko invoice is an orphan
Each invoice is listed once, under its first difference. Drafts and cancelled invoices are
never unmappable: they are not for the books, however malformed.
A Noko invoice is the connector's only with proof: the owner marker in its footer, or its id in
the state file or in our Kantata reference. One that merely carries our reference (Noko
generates references for invoices made without one) is counted as foreign and never touched.

A synced invoice whose Noko invoice is gone (deleted by hand) becomes a `gone` conflict in the
state file even without `--apply`, so that `status` shows it. Repairs (`--apply`) go through the
normal engine: with `force`, so every rule of a push, an update in place or a cancellation
holds (paid or locked Noko invoices are never changed); a missing Kantata reference alone is
written again without touching Noko.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from connector.state.store import InvoiceRecord
from connector.sync.engine import SyncEngine
from connector.sync.values import TAKEN_OUT
from connector.sync.values import text_id as _id
from mappings.errors import MappingError
from mappings.kantata import KantataInvoice, UndecodableInvoice, decode_invoices
from mappings.money import format_money, to_minor
from mappings.to_ledger import to_ledger

REPAIRABLE = {
    "missing_in_noko",
    "total_mismatch",
    "not_in_kantata",
    "reference_missing",
    "conflict",
    "deleted_in_kantata",
}
WITHOUT_FORCE = {"reference_missing", "deleted_in_kantata"}
"""Repaired by the engine's ordinary rules: nothing to override."""


@dataclass
class Difference:
    kind: str
    kantata_invoice_id: str | None
    target_id: str | None
    detail: str
    repairable: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "kantata_invoice_id": self.kantata_invoice_id,
            "noko_invoice_id": self.target_id,
            "detail": self.detail,
            "repairable": self.repairable,
        }


@dataclass
class Reconciliation:
    kantata_invoices: int = 0
    noko_invoices: int = 0
    foreign_noko_invoices: int = 0
    """Noko invoices carrying our reference without proof that the connector made them."""
    differences: list[Difference] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    still_failing: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kantata_invoices": self.kantata_invoices,
            "noko_invoices": self.noko_invoices,
            "foreign_noko_invoices": self.foreign_noko_invoices,
            "differences": [d.as_dict() for d in self.differences],
            "repaired": self.repaired,
            "still_failing": self.still_failing,
        }


def _reference_prefix(template: str) -> str:
    return template.split("{", 1)[0]


def _reference_id(template: str) -> re.Pattern[str]:
    """Matches a reference made by `template`; its group `id` is the Kantata invoice id. For
    invoices whose number is unknown (an unreadable record) when the template uses it."""
    parts = []
    named = False
    for part in re.split(r"(\{id\}|\{number\})", template):
        if part == "{id}":
            parts.append("(?P=id)" if named else "(?P<id>[0-9]+)")
            named = True
        elif part == "{number}":
            parts.append(".*?")
        else:
            parts.append(re.escape(part))
    return re.compile("".join(parts))


def reconcile(
    engine: SyncEngine,
    *,
    since: datetime | None,
    until: datetime | None,
    apply: bool,
    apply_kinds: frozenset[str] | None = None,
) -> Reconciliation:
    """Compare and, with `apply`, repair (only the kinds in `apply_kinds` when given)."""
    profile = engine.profile
    service = engine.settings.service_name
    name = engine.target.name
    result = Reconciliation()

    kantata: dict[str, KantataInvoice] = {}
    unreadable: dict[str, UndecodableInvoice] = {}
    after = None if since is None else since
    for page in engine.kantata.iter_invoice_pages(updated_after=after):
        for inv in decode_invoices(page.body):
            if isinstance(inv, KantataInvoice):
                if until is None or inv.updated_at < until:
                    kantata[inv.id] = inv
            else:
                unreadable[inv.id] = inv
    result.kantata_invoices = len(kantata) + len(unreadable)

    prefix = _reference_prefix(profile.ledger.reference)
    by_reference: dict[str, list[dict[str, Any]]] = {}
    for listed in engine.target.find(prefix):
        reference = str(listed.get("reference") or "")
        if prefix and not reference.startswith(prefix):
            continue
        by_reference.setdefault(reference, []).append(listed)
    result.noko_invoices = sum(len(v) for v in by_reference.values())
    # The target proves which of them are the connector's (its index, from this listing).
    index = engine.target.new_index(wanted=True)
    index.load((i for found in by_reference.values() for i in found), prefix)

    def ours(reference: str) -> set[str | None]:
        owned = index.own(reference, None, engine.target.carries_marker)
        return {_id(invoice.get("id")) for invoice in owned}

    records = engine.store.get_invoices(list(kantata) + list(unreadable))
    seen_references: set[str] = set()
    counted_foreign: set[str | None] = set()
    for kid, inv in sorted(kantata.items(), key=lambda item: int(item[0])):
        record = records.get(kid)
        reference = profile.ledger.reference.format(id=kid, number=inv.user_invoice_number)
        seen_references.add(reference)
        ref = inv.reference_for(service)
        proven = {record.target_id if record is not None else None}
        if ref is not None and (ref.external_status or "") != "deleted":
            proven.add(_id(ref.service_model_ref))
        proven.discard(None)
        found = []
        proven |= ours(reference) if by_reference.get(reference) else set()
        for listed in by_reference.get(reference, []):
            if str(listed.get("state") or "") in TAKEN_OUT:
                continue  # voided or deleted: no longer in the books
            if _id(listed.get("id")) in proven:
                found.append(listed)
            else:
                counted_foreign.add(_id(listed.get("id")))
        eligible = not inv.draft and not inv.is_cancelled
        if (
            eligible
            and not found
            and record is not None
            and record.status == "synced"
            and not record.stage
            and record.target_id is not None
            and record.target_state != "deleted"
        ):
            still = engine.target.get(record.target_id)
            if still is None or str(still.get("state") or "") in TAKEN_OUT:
                gone = _mark_gone(engine, record)
                result.differences.append(Difference("missing_in_noko", kid, None, gone))
                continue
            found = [still]  # ours, with a reference changed by hand: not gone
        if record is not None and record.status == "conflict":
            result.differences.append(
                Difference("conflict", kid, record.target_id, record.last_error or "")
            )
            continue
        if len(found) > 1:
            dup_ids = ", ".join(str(f.get("id")) for f in found)
            result.differences.append(
                Difference(
                    "duplicate_in_noko",
                    kid,
                    None,
                    f"{name} invoices {dup_ids} all carry {reference}: delete the extra ones in "
                    f"{name}",
                    repairable=False,
                )
            )
            continue
        noko_invoice: dict[str, Any] | None = found[0] if found else None
        noko_id = _id(noko_invoice.get("id")) if noko_invoice else None
        if not eligible:
            if noko_invoice is not None:
                state = "a draft" if inv.draft else "cancelled"
                result.differences.append(
                    Difference("not_in_kantata", kid, noko_id, f"{state} in Kantata, in {name}")
                )
            continue
        if noko_invoice is None:
            result.differences.append(
                Difference("missing_in_noko", kid, None, f"no {name} invoice {reference}")
            )
            continue
        try:
            doc = to_ledger(inv, profile)
        except MappingError as exc:
            result.differences.append(
                Difference("unmappable", kid, noko_id, str(exc), repairable=False)
            )
            continue
        total = noko_invoice.get("total_amount")
        try:
            noko_minor = to_minor(Decimal(str(total)), doc.exponent)
        except (ValueError, ArithmeticError):
            noko_minor = None
        if noko_minor != doc.total_minor:
            result.differences.append(
                Difference(
                    "total_mismatch",
                    kid,
                    noko_id,
                    f"{name} {_money(noko_minor, total, doc.exponent, doc.currency)}, Kantata "
                    f"{format_money(doc.total_minor, doc.exponent, doc.currency)}",
                    repairable=str(noko_invoice.get("state")) not in ("paid", "in_progress"),
                )
            )
            continue
        ref = inv.reference_for(service)
        if ref is None or ref.status != "successful" or ref.service_model_ref != str(noko_id):
            result.differences.append(
                Difference(
                    "reference_missing",
                    kid,
                    noko_id,
                    "Kantata has no successful reference to it"
                    if ref is None
                    else f"Kantata reference is {ref.status} for {ref.service_model_ref}",
                )
            )
    by_kantata_id: dict[str, list[dict[str, Any]]] = {}
    pattern = _reference_id(profile.ledger.reference)
    for reference, found in by_reference.items():
        matched = pattern.fullmatch(reference)
        if matched is not None:
            by_kantata_id.setdefault(matched["id"], []).extend(found)
    for kid, bad in sorted(unreadable.items(), key=lambda item: int(item[0])):
        found = by_kantata_id.get(kid, [])
        seen_references.update(str(f.get("reference") or "") for f in found)
        noko_id = _id(found[0].get("id")) if len(found) == 1 else None
        record = records.get(kid)
        if record is not None and record.status == "conflict":
            result.differences.append(
                Difference("conflict", kid, record.target_id, record.last_error or "")
            )
        elif bad.draft is True or (bad.status or "").strip().lower() == "cancelled":
            if found:  # not for the books, malformed or not: the engine takes it out of Noko
                state = "a draft" if bad.draft is True else "cancelled"
                result.differences.append(
                    Difference("not_in_kantata", kid, noko_id, f"{state} in Kantata, in {name}")
                )
        else:
            where = (
                f"; its {name} invoice stays as it is until the field is fixed in Kantata"
                if found
                else ""
            )
            result.differences.append(
                Difference("unmappable", kid, noko_id, str(bad.error) + where, repairable=False)
            )
    if since is None and until is None:
        orphans: set[str | None] = set()
        for record in _pushed_records(engine):
            if record.kantata_id in kantata or record.kantata_id in unreadable:
                continue
            orphans.add(record.target_id)
            result.differences.append(
                Difference(
                    "deleted_in_kantata",
                    record.kantata_id,
                    record.target_id,
                    f"deleted in Kantata after its push; {name} invoice {record.target_id} "
                    "is deleted by `reconcile --apply` (left as a conflict if it is paid)",
                )
            )
        for reference, found in sorted(by_reference.items()):
            if reference not in seen_references:
                owned = ours(reference)
                for extra in found:
                    if _id(extra.get("id")) in orphans:
                        continue  # listed above, with its Kantata id
                    if _id(extra.get("id")) not in owned:
                        counted_foreign.add(_id(extra.get("id")))
                        continue
                    result.differences.append(
                        Difference(
                            "not_in_kantata",
                            None,
                            _id(extra.get("id")),
                            f"{reference} matches no Kantata invoice",
                            repairable=False,
                        )
                    )

    result.foreign_noko_invoices = len(counted_foreign)

    if apply:
        kinds = REPAIRABLE if apply_kinds is None else REPAIRABLE & apply_kinds
        chosen = [
            d
            for d in result.differences
            if d.repairable and d.kind in kinds and d.kantata_invoice_id is not None
        ]
        forced = {d.kantata_invoice_id for d in chosen if d.kind not in WITHOUT_FORCE}
        plain = {d.kantata_invoice_id for d in chosen} - forced
        for ids, force in ((plain, False), (forced, True)):
            if not ids:
                continue
            ordered = sorted((i for i in ids if i is not None), key=int)
            cycle = engine.run_cycle(kind="sync", only_ids=ordered, force=force)
            if cycle.auth_error is not None:
                raise cycle.auth_error  # nothing was repaired after it: say why, once
            if cycle.limit_reached is not None:
                # The invoices after it were left as they were: none is counted as repaired.
                raise cycle.limit_reached
            result.still_failing.update(cycle.failed)
            result.repaired += [i for i in ordered if i not in cycle.failed]
    return result


def _money(minor: int | None, raw: Any, exponent: int, currency: str) -> str:
    """Noko's total in the same form as Kantata's (`1,234.50 USD`), or as given if unreadable."""
    if minor is None:
        return f"{raw!r} (not an amount in {currency})"
    return format_money(minor, exponent, currency)


RECONCILE_MARK = "reconcile"
"""The state file's mark of the daemon's last scheduled reconcile."""
SCHEDULED_REPAIRS = frozenset({"deleted_in_kantata"})
"""What the daemon's scheduled reconcile repairs by itself: what a sync would do if it could
see it (a Kantata invoice deleted after its push is handled like a cancellation). The rest is
listed, and conflicts show in `status`, for an operator's `reconcile --apply`."""


def reconcile_if_due(engine: SyncEngine, interval: float) -> Reconciliation | None:
    """The daemon's own reconcile, at most once per `interval` seconds (0: never), counted
    from the last one recorded in the state file, so a restart does not repeat it. Costs one
    full read of Kantata (200 invoices a request) and of the connector's Noko invoices (1,000
    a request) each time."""
    if interval <= 0:
        return None
    now = engine.clock()
    last = engine.store.get_cursor(RECONCILE_MARK)
    if last is not None and (now - last).total_seconds() < interval:
        return None
    outcome = reconcile(engine, since=None, until=None, apply=True, apply_kinds=SCHEDULED_REPAIRS)
    engine.store.set_cursor(now, RECONCILE_MARK)
    return outcome


def _mark_gone(engine: SyncEngine, record: InvoiceRecord) -> str:
    """A synced invoice's Noko invoice is not listed, and Noko confirms that it is gone
    (deleted by hand; one request, only for such an invoice): the record becomes a `gone`
    conflict, so that `status` shows it. Returns the reason."""
    noko_id = record.target_id
    name = engine.target.name
    message = (
        f"{name} invoice {noko_id} was deleted in {name}; run `kantata-sync reconcile --apply` "
        f"(or `kantata-sync retry {record.kantata_id} --force`) to push it again as a new {name} "
        "invoice"
    )
    with engine.lock_for(record.kantata_id):
        record.status = "conflict"
        record.error_kind = "gone"
        record.last_error = message
        record.next_attempt_at = None
        engine.store.save_invoice(record, event="conflict", detail=message)
    return message


def _pushed_records(engine: SyncEngine) -> list[InvoiceRecord]:
    """Records of invoices the connector has in Noko (or was putting there)."""
    return [
        r
        for r in engine.store.all_invoices()
        if r.status != "skipped"
        and (
            (r.target_id is not None and r.target_state != "deleted")
            or r.stage in ("pushing", "pushed", "updating")
        )
    ]
