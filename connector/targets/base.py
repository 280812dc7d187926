"""The one interface the sync engine reaches an accounting system through.

The engine is handed a `Target` (built in `connector/faces/app.py`); it reads the target's
invoices through it. An invoice as the target answers is a plain mapping of its fields (`id`,
`reference`, `state`, `total_amount`, ...): the engine reads scalar fields only.

What goes through this interface today: listing the connector's own invoices by the
natural key's prefix (the bulk match of a new or restored state file, `reconcile`), reading one
invoice, reading the changes since a moment, the per-cycle index of own invoices, the link
for people, and comparing an invoice read with a ledger document or with the lines pushed.
Creating, updating and cancelling still go through the target's own pusher (the engine is
handed it beside the target) and its own error types.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from mappings.ledger import LedgerDocument

TargetInvoice = Mapping[str, Any]
"""An invoice as the target answers it: its fields by name."""


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
        kantata_says: int | None,
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

    def get(self, target_id: int) -> dict[str, Any] | None:
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
