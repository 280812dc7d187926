"""Creates the server applied after the connector gave up on them: their leftovers are removed."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from connector.faces.app import open_connector
from connector.sync.engine import IN_DOUBT_MARK, LATE_WRITE_WINDOW
from sandbox import Sandbox, generate
from tests.e2e import check_books, settings_for


def _expense_ids(box: Sandbox) -> set[int]:
    return {int(e["id"]) for e in box.noko.state()["expenses"]}


@pytest.mark.parametrize("marked_ago", [timedelta(seconds=5), LATE_WRITE_WINDOW * 2, None])
def test_a_late_copy_of_a_done_invoice_is_removed_while_creates_may_still_land(
    box: Sandbox, tmp_path: Path, marked_ago: timedelta | None
) -> None:
    """Soon after a create in doubt, a cycle deletes a synced invoice's late copy; else no GET."""
    generate(box.kantata, seed=31, invoices=12)
    with open_connector(settings_for(box, tmp_path)) as connector:
        assert connector.engine.run_cycle().exit_code == 0
        record = next(r for r in connector.store.all_invoices() if r.status == "synced")
        project = box.noko.add_project("Late landings")
        late = box.noko.add_expense(
            project_id=project, price=Decimal("5.00"), description=f"Copy [{record.reference}/ai1]"
        )
        unknown = box.noko.add_expense(
            project_id=project, price=Decimal("1.00"), description="Not ours [KS-999999/ai1]"
        )
        if marked_ago is not None:
            connector.store.set_cursor(datetime.now(UTC) - marked_ago, IN_DOUBT_MARK)
        before = Counter(connector.noko.stats.by_endpoint)
        assert connector.engine.run_cycle().exit_code == 0
        requests = Counter(connector.noko.stats.by_endpoint) - before
    swept = marked_ago is not None and marked_ago < LATE_WRITE_WINDOW
    assert (late in _expense_ids(box)) is not swept
    assert unknown in _expense_ids(box)
    assert ("GET /expenses" in requests) is swept
    box.noko.delete_expense(unknown)
    if swept:
        assert check_books(box).problems == []
