"""Late writes: a create that got no answer may still be applied by the server after the retry
made its own. For a while after a create was left in doubt, each cycle removes what such
creates left behind for invoices that are done (`Target.sweep_late_writes`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from connector.errors import ApiError
from connector.state.store import Store
from connector.sync.values import done as _done
from connector.targets.base import Target

IN_DOUBT_MARK = "writes-in-doubt"
"""The store's mark of when a create was last left in doubt."""
LATE_WRITE_WINDOW = timedelta(minutes=15)


class LateWrites:
    def __init__(self, target: Target, store: Store, clock: Callable[[], datetime]) -> None:
        self.target = target
        self.store = store
        self.clock = clock

    def note_in_doubt(self) -> None:
        self.store.set_cursor(self.clock(), IN_DOUBT_MARK)

    def sweep(self, log: Any) -> None:
        """Remove leftovers of creates that landed after their invoice was done (synced, or
        cancelled and deleted). Runs only within `LATE_WRITE_WINDOW` of the last create left
        in doubt, so an ordinary cycle sends no extra request."""
        mark = self.store.get_cursor(IN_DOUBT_MARK)
        if mark is None or self.clock() - mark > LATE_WRITE_WINDOW:
            return

        def done(reference: str) -> bool:
            record = self.store.by_references([reference]).get(reference)
            return record is not None and _done(record)

        try:
            deleted = self.target.sweep_late_writes(done)
        except ApiError as exc:
            log.warning(
                "could not look for late writes; the next cycle looks again", error=str(exc)
            )
            return
        if deleted:
            log.info(
                "removed leftovers of creates that landed after their invoice", deleted=deleted
            )
