"""The one interface the sync engine reaches an accounting system through.

The engine is handed a `Target` (built in `connector/faces/app.py`); it reads the target's
invoices through it. An invoice as the target answers is a plain mapping of its fields (`id`,
`reference`, `state`, `total_amount`, ...): the engine reads scalar fields only.

Neutral fields of a target invoice (each target normalises its answers to these): `id`
(str), `reference` (the natural key, e.g. `KS-123`), `state` (the target's own status word,
shown to people as `external_status`), `total_amount` (decimal string, major units),
`updated_at` (ISO 8601), `paid` (bool: paid in full). A target may add its own fields.

Writes take batches (`batch_size` invoices per call: Noko 1, Xero 50); the engine hands each
invoice to a `connector.sync.batch.Batcher`, which coalesces the invoices of concurrent
workers into one call. Each item of a batch gets its own result: a `Written` / `Cancelled`,
or the exception that item met (`TargetRefusedError`, `TargetGoneError`,
`DuplicateInTargetError`, `TransientApiError`, `PermanentApiError`, `MappingError`). What
concerns the whole call (`AuthError`, `LimitReachedError`) is raised instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from mappings.ledger import LedgerDocument

TargetInvoice = Mapping[str, Any]
"""An invoice as the target answers it: its fields by name."""


class TargetRefusedError(Exception):
    """The target will not let the invoice change (paid, part-paid, locked): a conflict for
    people, never retried by itself."""

    def __init__(
        self, target_id: str, code: str, message: str, invoice: TargetInvoice | None = None
    ) -> None:
        self.target_id = target_id
        self.code = code
        """The target's word for why (`paid`, `in_progress`, `PAID`, ...)."""
        self.invoice = invoice
        """The invoice as read, when it was (to tell whether it is already as wanted)."""
        super().__init__(message)


class TargetGoneError(Exception):
    """The invoice the connector pushed no longer exists in the target."""

    def __init__(self, target_id: str, message: str = "") -> None:
        self.target_id = target_id
        super().__init__(message or f"invoice {target_id} no longer exists")


class DuplicateInTargetError(Exception):
    """The target holds more than one invoice with our reference: an operator decides."""

    def __init__(self, target: str, reference: str, ids: Sequence[Any]) -> None:
        self.reference = reference
        self.ids = list(ids)
        super().__init__(
            f"{target} has {len(self.ids)} invoices with reference {reference} (ids "
            f"{', '.join(str(i) for i in self.ids)}); delete the extra ones in {target}, "
            "then retry"
        )


@dataclass(frozen=True)
class Write:
    """One invoice to create or update."""

    kantata_id: str
    doc: LedgerDocument
    target_id: str | None = None
    """Update: the target's invoice to change in place. Create: None."""
    known_ids: tuple[str, ...] = ()
    """Create: ids Kantata's reference names (an earlier push of ours), to adopt if found."""
    recovering: bool = False
    """Create: an earlier attempt may have left objects behind; look for them first."""
    force: bool = False
    """Update: the operator asks for Kantata's version (hand-made lines go too)."""


@dataclass
class Written:
    """What the target holds for one invoice after a create or update."""

    invoice: TargetInvoice
    """The target's answer, neutral fields (see above)."""
    target_id: str
    link: str | None
    state: str | None
    lines: list[str] | None
    """Keys of the lines as pushed (for the hand-edit check); None when not known (adopted)."""
    adopted: bool = False
    """Create: found from an earlier attempt (or already there) instead of made now."""
    created: bool = False
    """Create: made by this call (so a wrong total may be discarded again)."""
    problems: list[str] = field(default_factory=list)
    """How the target's totals differ from the ledger document; empty when exact to the
    minor unit. A target that approves only verified invoices leaves these unapproved."""
    detail: str = ""
    """For the invoice's event log ("3 lines added, 1 removed")."""


@dataclass(frozen=True)
class Cancel:
    """One invoice to take out of the books."""

    kantata_id: str
    reference: str
    target_id: str


@dataclass
class Cancelled:
    target_id: str
    state: str
    """What the target now says (`deleted`, `DELETED`, `VOIDED`)."""
    detail: str = ""


Result = Any
"""A `Written` / `Cancelled`, or the exception that item met."""


class TargetIndex(Protocol):
    """The connector's invoices in the target, listed in bulk at most once a cycle (only in a
    cycle where the state file may not know everything the target holds)."""

    wanted: bool
    loaded: bool

    def load(self, invoices: Iterable[dict[str, Any]], prefix: str) -> int: ...

    lock: threading.Lock

    def own(
        self,
        reference: str,
        kantata_says: str | None,
        owns: Callable[[dict[str, Any], str], bool],
    ) -> list[dict[str, Any]]: ...


class Target(Protocol):
    """An accounting system the sync writes invoices to."""

    name: str
    """How people call it ("Noko")."""

    def find(self, prefix: str) -> Iterator[dict[str, Any]]:
        """The target's invoices whose natural key (reference) starts with `prefix` (all with
        an empty prefix); the target may return more, the caller filters exactly."""
        ...

    def get(self, target_id: str) -> dict[str, Any] | None:
        """One invoice, or None when the target has no such invoice."""
        ...

    def changes_since(
        self,
        since: datetime | None,
        *,
        on_server_time: Callable[[datetime | None], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Invoices changed since `since` (all with None); `on_server_time` gets the target's
        clock for each page read, when it gives it."""
        ...

    def new_index(self, *, wanted: bool) -> TargetIndex:
        """An empty per-cycle index of the connector's invoices in the target."""
        ...

    def link(self, invoice: TargetInvoice) -> str | None:
        """The page a person can open for the invoice, or None when the answer has none."""
        ...

    def carries_marker(self, invoice: TargetInvoice, reference: str) -> bool:
        """Whether the invoice carries `reference` and the connector's owner marker for it
        (no request: what the answer itself shows)."""
        ...

    def as_asked(self, doc: LedgerDocument, invoice: TargetInvoice) -> bool:
        """Whether the invoice's totals and line counts are what `doc` asks for."""
        ...

    def line_drift(self, invoice: TargetInvoice, pushed: Sequence[str]) -> list[str]:
        """How the invoice's line counts differ from the lines pushed (their keys, as the
        store keeps them); empty when they do not, or the answer does not show them."""
        ...

    # ------------------------------------------------------------------ writes

    batch_size: int
    """Invoices per write call (the Batcher fills batches up to it)."""

    def create(self, items: Sequence[Write]) -> list[Written | Exception]:
        """Create each invoice (or adopt the one an earlier attempt made: looked up by
        reference before anything is sent again), verify its totals, and (for a target with
        approval) approve the verified ones. One result per item, in order."""
        ...

    def update(self, items: Sequence[Write]) -> list[Written | Exception]:
        """Bring each invoice to its ledger document in place (same id), verified."""
        ...

    def cancel(self, items: Sequence[Cancel]) -> list[Cancelled | Exception]:
        """Take each invoice out of the books (delete or void, as the target allows);
        `TargetRefusedError` for one paid or part-paid (never touched)."""
        ...

    def discard(self, reference: str, target_id: str) -> int:
        """Delete an invoice this attempt just created with wrong totals, with whatever was
        made for it; returns how many objects went."""
        ...

    def find_one(self, reference: str) -> TargetInvoice | None:
        """The connector's one invoice with this reference (None when there is none);
        `DuplicateInTargetError` when there are several."""
        ...

    def sweep(self, reference: str) -> int:
        """Remove what a never-finished push of `reference` may have left; returns how many."""
        ...

    def sweep_late_writes(self, done: Callable[[str], bool]) -> int:
        """Remove objects of ours that landed after their invoice was done (`done(reference)`);
        0 for a target whose writes cannot land late."""
        ...

    def header_differs(self, doc: LedgerDocument, invoice: TargetInvoice) -> bool:
        """Whether the invoice's header fields (dates, customer, ...) differ from `doc`."""
        ...


class ReferenceIndex:
    """A `TargetIndex` by reference and id, kept in memory: the connector's invoices listed in
    bulk at most once a cycle (a new or restored state file). A target narrows it: `keep`
    (which listed invoices count), `slim` (what of each is kept), `order` (of the matches, by
    id text), `proof` (its own proof of ownership, used instead of the caller's)."""

    def __init__(
        self,
        *,
        wanted: bool,
        keep: Callable[[dict[str, Any]], bool] | None = None,
        slim: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        order: Callable[[str], Any] | None = None,
        proof: Callable[[dict[str, Any], str], bool] | None = None,
    ) -> None:
        self.wanted = wanted
        self.loaded = False
        self.lock = threading.Lock()
        self.by_reference: dict[str, list[dict[str, Any]]] = {}
        self.by_id: dict[str, dict[str, Any]] = {}
        self._keep = keep
        self._slim = slim
        self._order = order
        self.owns = proof

    def load(self, invoices: Iterable[dict[str, Any]], prefix: str) -> int:
        count = 0
        for invoice in invoices:
            reference = invoice.get("reference")
            target_id = id_text(invoice.get("id"))
            if target_id is None or not isinstance(reference, str):
                continue
            if prefix and not reference.startswith(prefix):
                continue
            if self._keep is not None and not self._keep(invoice):
                continue
            kept = self._slim(invoice) if self._slim is not None else invoice
            self.by_reference.setdefault(reference, []).append(kept)
            self.by_id[target_id] = kept
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
        said = id_text(kantata_says)
        found = {
            id_text(inv.get("id")) or "": inv
            for inv in self.by_reference.get(reference, [])
            if id_text(inv.get("id")) == said or owns(inv, reference)
        }
        named = self.by_id.get(said) if said is not None else None
        if said is not None and named is not None and named.get("reference") == reference:
            found[said] = named
        order = self._order or (lambda key: key)
        return [inv for _, inv in sorted(found.items(), key=lambda kv: order(kv[0]))]


def id_text(value: Any) -> str | None:
    """A target id as text (None for none, a bool or blank)."""
    if value is None or isinstance(value, bool):
        return None
    return str(value).strip() or None
