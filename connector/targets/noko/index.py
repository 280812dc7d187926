"""The connector's invoices in Noko, listed in bulk to match a new or restored state file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connector.targets.base import ReferenceIndex


class NokoIndex(ReferenceIndex):
    """The connector's invoices in Noko, listed in bulk (1,000 a request) at most once a cycle,
    and only in a cycle where the state file may not know everything Noko holds: a new state
    file (no cursor yet), or one older than Noko (a Kantata invoice carries our reference to a
    Noko invoice the state file does not have). Before anything is created for an invoice
    without a Noko id, it is looked for here, so a lost or restored state file never duplicates.

    Only invoices whose reference starts with the profile's prefix are kept, each as its scalar
    fields (no line lists): enough to compare totals and header with what Kantata asks for."""

    def __init__(
        self, *, wanted: bool, owns: Callable[[dict[str, Any], str], bool] | None = None
    ) -> None:
        super().__init__(
            wanted=wanted,
            slim=lambda invoice: {k: v for k, v in invoice.items() if not isinstance(v, list)},
            # Oldest first: Noko's ids grow, so the shorter text is the smaller number.
            order=lambda key: (len(key), key),
            proof=owns,
        )
