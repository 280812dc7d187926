"""The per-invoice decision, pure: from the Kantata invoice as decoded, what the state file
knows of it, and (once mapped) its ledger fingerprint, which action brings it to its goal.

Nothing here reads a server, the store or the clock: the engine passes what it knows, carries out
the action (`SyncEngine._handle`) and may ask again after an action that changes what it knows
(`RECOVER`: the state file may be older than the target, which is looked up first).

Two steps, because mapping an invoice to a ledger document is only worth it when the invoice is
to be in the books: `decide_source` before mapping, `decide` after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from connector.state.models import InvoiceRecord
from mappings.kantata import DecodedInvoice, KantataInvoice, UndecodableInvoice

IN_FLIGHT_STAGES = ("pushing", "pushed", "updating", "cancelling")
"""Stages in which the target's objects may exist whatever the record's id says."""


class Action(StrEnum):
    CONFLICT = "conflict"
    """An operator decides first (`retry --force`, `reconcile --apply`, `resolve`)."""
    CANCEL = "cancel"
    """Cancelled in Kantata, in the target: remove it there (or report a conflict)."""
    SKIP = "skip"
    """A draft or cancelled invoice with nothing in the target: recorded as skipped."""
    UNMAPPABLE = "unmappable"
    """Kantata's invoice cannot be decoded or mapped: a mapping failure."""
    SETTLED = "settled"
    """Deleted in the target after a cancellation: stays skipped unless forced."""
    MAP = "map"
    """To be in the books: map it to a ledger document, then `decide`."""
    RECOVER = "recover"
    """The state file may be older than the target: look the invoice up there first."""
    UNCHANGED = "unchanged"
    """Synced as it is, reference in place."""
    WRITE_REFERENCE = "write-reference"
    """Synced as it is, but Kantata's reference is missing or names something else."""
    WAIT = "wait"
    """Failed earlier; neither its retry time came nor did Kantata change it."""
    FINISH = "finish"
    """Pushed, only the write-back to Kantata is outstanding."""
    UPDATE = "update"
    """In the target: bring it to the ledger document in place."""
    PUSH = "push"
    """Not in the target: create it."""


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str = ""
    """For SKIP: 'draft' or 'cancelled'."""
    forget: Literal["", "recover", "plain"] = ""
    """For PUSH: drop the target's old invoice from the record first; 'recover' also makes
    the push reuse or remove what the old one left behind."""


def in_target(record: InvoiceRecord | None) -> bool:
    """Whether the target holds (or may hold) this invoice, not settled: a skipped record is
    done with (deleted in the target, or kept there by an operator's decision)."""
    return record is not None and (
        (
            record.target_id is not None
            and record.target_state != "deleted"
            and record.status != "skipped"
        )
        or record.stage in IN_FLIGHT_STAGES
    )


def decide_source(inv: DecodedInvoice, record: InvoiceRecord | None, *, force: bool) -> Decision:
    """What Kantata's invoice asks for before it is mapped."""
    if record is not None and record.status == "conflict" and not force:
        return Decision(Action.CONFLICT)
    there = in_target(record)
    if isinstance(inv, UndecodableInvoice):
        cancelled = (inv.status or "").strip().lower() == "cancelled"
        if inv.draft is True or cancelled:
            if cancelled and there:
                return Decision(Action.CANCEL)
            return Decision(Action.SKIP, "draft" if inv.draft else "cancelled")
        return Decision(Action.UNMAPPABLE)
    if inv.is_cancelled:
        if there:
            return Decision(Action.CANCEL)
        return Decision(Action.SKIP, "cancelled")
    if inv.draft:
        return Decision(Action.SKIP, "draft")
    if (
        record is not None
        and record.target_state == "deleted"
        and (record.skip_reason or "").startswith("cancelled")
        and not force
    ):
        return Decision(Action.SETTLED)
    return Decision(Action.MAP)


def due(record: InvoiceRecord | None, inv: KantataInvoice, fingerprint: str, now: datetime) -> bool:
    """Whether a failed invoice may be tried now: its retry time came, or Kantata changed."""
    if record is None or record.status != "failed":
        return True
    if record.source_fingerprint != inv.source_fingerprint or record.fingerprint != fingerprint:
        return True
    return record.next_attempt_at is not None and record.next_attempt_at <= now


def decide(
    inv: KantataInvoice,
    record: InvoiceRecord | None,
    fingerprint: str,
    *,
    stale: bool,
    reference_in_place: Callable[[InvoiceRecord], bool],
    now: datetime,
    force: bool = False,
    retry_now: bool = False,
) -> Decision:
    """What a mapped invoice needs. `stale`: the state file may not know the target's invoice
    (answer RECOVER; the engine looks, then asks again with `stale=False`).
    `reference_in_place(record)`: whether Kantata holds the reference the record calls for."""
    if stale:
        return Decision(Action.RECOVER)
    if (
        record is not None
        and record.stage == ""
        and record.status == "synced"
        and record.fingerprint == fingerprint
        and not force
    ):
        if reference_in_place(record):
            return Decision(Action.UNCHANGED)
        return Decision(Action.WRITE_REFERENCE)
    forget: Literal["", "recover", "plain"] = ""
    if force and record is not None and record.error_kind == "gone":
        # The operator asks to push again what was deleted in the target.
        forget = "recover"
    elif not (force or retry_now) and not due(record, inv, fingerprint, now):
        return Decision(Action.WAIT)
    if (
        not forget
        and record is not None
        and record.target_id is not None
        and record.target_state != "deleted"
    ):
        if record.stage == "pushed" and record.fingerprint == fingerprint and not force:
            return Decision(Action.FINISH)
        return Decision(Action.UPDATE)
    if not forget and record is not None and record.target_state == "deleted":
        forget = "plain"
    return Decision(Action.PUSH, forget=forget)
