"""`reconcile`: compare Kantata, Noko and the state store for a window, and repair what is safe.

Read-only unless asked to apply. Differences found:
  missing_in_noko     eligible Kantata invoice without a Noko invoice
  total_mismatch      Noko total differs from the Kantata total
  duplicate_in_noko   several Noko invoices carry one reference (never repaired automatically)
  not_in_kantata      a Noko invoice with our reference whose Kantata invoice is a draft,
                      cancelled, or unknown
  reference_missing   in Noko, but the Kantata invoice has no successful reference to it
  conflict            the store holds an unresolved conflict
Repairs (`--apply`) go through the normal engine with `force`, so every rule of a push, an
update in place or a cancellation holds; paid or locked Noko invoices are never changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from connector.engine import SyncEngine
from mappings.errors import MappingError
from mappings.kantata import KantataInvoice, decode_invoices
from mappings.money import format_money, to_minor
from mappings.to_ledger import to_ledger

REPAIRABLE = {
    "missing_in_noko",
    "total_mismatch",
    "not_in_kantata",
    "reference_missing",
    "conflict",
}


@dataclass
class Difference:
    kind: str
    kantata_invoice_id: str | None
    noko_invoice_id: int | None
    detail: str
    repairable: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "kantata_invoice_id": self.kantata_invoice_id,
            "noko_invoice_id": self.noko_invoice_id,
            "detail": self.detail,
            "repairable": self.repairable,
        }


@dataclass
class Reconciliation:
    kantata_invoices: int = 0
    noko_invoices: int = 0
    differences: list[Difference] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    still_failing: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kantata_invoices": self.kantata_invoices,
            "noko_invoices": self.noko_invoices,
            "differences": [d.as_dict() for d in self.differences],
            "repaired": self.repaired,
            "still_failing": self.still_failing,
        }


def _reference_prefix(template: str) -> str:
    return template.split("{", 1)[0]


def reconcile(
    engine: SyncEngine,
    *,
    since: datetime | None,
    until: datetime | None,
    apply: bool,
) -> Reconciliation:
    profile = engine.profile
    service = engine.settings.service_name
    result = Reconciliation()

    kantata: dict[str, KantataInvoice] = {}
    unreadable: dict[str, str] = {}
    after = None if since is None else since
    for page in engine.kantata.iter_invoice_pages(updated_after=after):
        for inv in decode_invoices(page.body):
            if isinstance(inv, KantataInvoice):
                if until is None or inv.updated_at < until:
                    kantata[inv.id] = inv
            else:
                unreadable[inv.id] = str(inv.error)
    result.kantata_invoices = len(kantata) + len(unreadable)

    prefix = _reference_prefix(profile.noko.reference)
    by_reference: dict[str, list[dict[str, Any]]] = {}
    params = {"reference": prefix} if prefix else {}
    for listed in engine.noko.list_invoices(params):
        reference = str(listed.get("reference") or "")
        if prefix and not reference.startswith(prefix):
            continue
        by_reference.setdefault(reference, []).append(listed)
    result.noko_invoices = sum(len(v) for v in by_reference.values())

    records = engine.store.get_invoices(list(kantata) + list(unreadable))
    seen_references: set[str] = set()
    for kid, inv in sorted(kantata.items(), key=lambda item: int(item[0])):
        record = records.get(kid)
        reference = profile.noko.reference.format(id=kid, number=inv.user_invoice_number)
        seen_references.add(reference)
        found = by_reference.get(reference, [])
        eligible = not inv.draft and not inv.is_cancelled
        if record is not None and record.status == "conflict":
            result.differences.append(
                Difference("conflict", kid, record.noko_invoice_id, record.last_error or "")
            )
            continue
        if len(found) > 1:
            dup_ids = ", ".join(str(f.get("id")) for f in found)
            result.differences.append(
                Difference(
                    "duplicate_in_noko",
                    kid,
                    None,
                    f"Noko invoices {dup_ids} all carry {reference}: delete the extra ones in Noko",
                    repairable=False,
                )
            )
            continue
        noko_invoice: dict[str, Any] | None = found[0] if found else None
        noko_id = _int(noko_invoice.get("id")) if noko_invoice else None
        if not eligible:
            if noko_invoice is not None:
                state = "a draft" if inv.draft else "cancelled"
                result.differences.append(
                    Difference("not_in_kantata", kid, noko_id, f"{state} in Kantata, in Noko")
                )
            continue
        if noko_invoice is None:
            result.differences.append(
                Difference("missing_in_noko", kid, None, f"no Noko invoice {reference}")
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
                    f"Noko {total}, Kantata "
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
    for kid, error in sorted(unreadable.items()):
        result.differences.append(Difference("unmappable", kid, None, error, repairable=False))
    if since is None and until is None:
        for reference, found in sorted(by_reference.items()):
            if reference not in seen_references:
                for extra in found:
                    result.differences.append(
                        Difference(
                            "not_in_kantata",
                            None,
                            _int(extra.get("id")),
                            f"{reference} matches no Kantata invoice",
                            repairable=False,
                        )
                    )

    if apply:
        ids = sorted(
            {
                d.kantata_invoice_id
                for d in result.differences
                if d.repairable and d.kind in REPAIRABLE and d.kantata_invoice_id is not None
            },
            key=int,
        )
        if ids:
            cycle = engine.run_cycle(kind="sync", only_ids=ids, force=True)
            if cycle.auth_error is not None:
                raise cycle.auth_error  # nothing was repaired after it: say why, once
            result.still_failing = dict(cycle.failed)
            result.repaired = [i for i in ids if i not in cycle.failed]
    return result


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
