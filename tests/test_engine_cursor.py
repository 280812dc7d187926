"""The incremental read: no invoice skipped while Kantata changes under the scan."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connector.faces.app import Connector, open_connector
from connector.kantata.paging import KantataPage
from sandbox import Sandbox, generate
from tests.e2e import check_books, settings_for


def _eligible(box: Sandbox) -> set[str]:
    return {
        str(inv["id"])
        for inv in box.kantata.state()["invoices"]
        if not inv["draft"] and inv["status"] != "cancelled"
    }


def _synced(connector: Connector) -> set[str]:
    return {r.kantata_id for r in connector.store.all_invoices() if r.status == "synced"}


def test_hundreds_sharing_one_updated_at_all_sync_in_one_cycle(
    box: Sandbox, tmp_path: Path
) -> None:
    """450 invoices with one identical updated_at (three pages) all sync in one cycle."""
    generate(box.kantata, seed=21, invoices=480, same_updated_at=450)
    with open_connector(settings_for(box, tmp_path)) as connector:
        result = connector.engine.run_cycle()
        assert result.exit_code == 0, result.failed
        assert result.pages >= 3
        assert _synced(connector) == _eligible(box)
    assert check_books(box).problems == []


def test_updates_during_the_scan_skip_nothing(box: Sandbox, tmp_path: Path) -> None:
    """Invoices updated, created and deleted between pages: the cycle still handles every
    invoice that existed when it started, and the next cycle the ones created meanwhile."""
    generate(box.kantata, seed=22, invoices=520, same_updated_at=300, draft_rate=0.05)
    state = box.kantata.state()["invoices"]
    ids = [int(inv["id"]) for inv in state]
    drafts = [int(inv["id"]) for inv in state if inv["draft"]]
    before = _eligible(box)
    with open_connector(settings_for(box, tmp_path)) as connector:
        original = connector.kantata.iter_invoice_pages
        pages_seen = 0

        def moving_pages(**kwargs: Any) -> Iterator[KantataPage]:
            nonlocal pages_seen
            for page in original(**kwargs):
                pages_seen += 1
                yield page
                if pages_seen == 1:
                    # rows of page 1 and of later pages are updated; a draft vanishes
                    box.kantata.touch(ids[10:30] + ids[300:330])
                    box.kantata.delete(drafts[0])  # on page 1: later rows shift back
                    box.kantata.advance_clock(5)
                if pages_seen == 2:
                    generate_more(box)

        connector.kantata.iter_invoice_pages = moving_pages  # type: ignore[method-assign]
        result = connector.engine.run_cycle()
        assert result.exit_code == 0, result.failed
        missing = before - _synced(connector)
        assert missing == set()
        connector.kantata.iter_invoice_pages = original  # type: ignore[method-assign]
        second = connector.engine.run_cycle()
        assert second.exit_code == 0
        assert _synced(connector) == _eligible(box)
    assert check_books(box).problems == []


def generate_more(box: Sandbox) -> None:
    workspace = box.kantata.state()["workspaces"][0]
    for n in range(3):
        box.kantata.add_invoice(
            workspace_ids=[int(workspace["id"])],
            currency="USD",
            lines=[{"kind": "additional_item", "amount_in_cents": 1000 + n, "notes": "late"}],
        )


def test_cursor_never_passes_scan_start_minus_skew(box: Sandbox, tmp_path: Path) -> None:
    """The stored cursor is at most the scan's start minus the clock-skew margin."""
    generate(box.kantata, seed=23, invoices=30)
    with open_connector(settings_for(box, tmp_path, kantata_sync_clock_skew_seconds=120)) as c:
        # This machine's clock an hour behind Kantata's: the cap is what sets the cursor. (Read
        # from the real clock, the scan's start falls a few ms after the test's own reading,
        # and a Kantata Date in the next second left the cursor just past it.)
        started = datetime.now(UTC) - timedelta(hours=1)
        c.engine.clock = lambda: started
        result = c.engine.run_cycle()
        assert result.cursor_after is not None
        assert result.cursor_after <= started - timedelta(seconds=120)


def test_write_back_does_not_cause_a_push(box: Sandbox, tmp_path: Path) -> None:
    """The connector's own write-back bumps updated_at, and the next cycle pushes nothing."""
    generate(box.kantata, seed=24, invoices=25)
    with open_connector(settings_for(box, tmp_path, kantata_sync_lookback_seconds=86400)) as c:
        first = c.engine.run_cycle()
        assert first.counts["pushed"] > 0
        noko_before = dict(c.noko.stats.by_endpoint)
        kantata_before = dict(c.kantata.stats.by_endpoint)
        second = c.engine.run_cycle()
        assert second.counts["pushed"] == 0
        assert second.counts["unchanged"] == first.counts["pushed"]
        noko_new = Counter(c.noko.stats.by_endpoint) - Counter(noko_before)
        kantata_new = Counter(c.kantata.stats.by_endpoint) - Counter(kantata_before)
        # Reads only: one Kantata page and one Noko page of changed invoices (payment states).
        assert dict(noko_new) == {"GET /invoices": 1}
        assert dict(kantata_new) == {"GET /invoices.json": 1}


def _shift_clocks(box: Sandbox, connector: Connector, seconds: float) -> None:
    """Time passes on both sides: the fakes' clocks and the connector's."""
    box.kantata.advance_clock(seconds)
    box.noko.advance_clock(seconds)
    before = connector.engine.clock
    connector.engine.clock = lambda: before() + timedelta(seconds=seconds)


def test_a_quiet_cycle_is_one_request_once_the_lookback_window_is_past(
    box: Sandbox, tmp_path: Path
) -> None:
    """The cursor follows Kantata's clock: after the write-backs have left the lookback
    window, a cycle with nothing new reads one (empty) page from each side."""
    generate(box.kantata, seed=25, invoices=450, draft_rate=0.0)
    settings = settings_for(
        box, tmp_path, kantata_sync_lookback_seconds=300, kantata_sync_clock_skew_seconds=60
    )
    with open_connector(settings) as c:
        first = c.engine.run_cycle()
        assert first.exit_code == 0 and first.counts["pushed"] > 400
        rereading = c.engine.run_cycle()  # the write-backs are in the window: read again
        assert rereading.pages >= 3 and rereading.counts["pushed"] == 0
        _shift_clocks(box, c, 300 + 60 + 1)
        c.engine.run_cycle()  # the cursor moves to Kantata's clock minus the margin
        kantata_before = Counter(c.kantata.stats.by_endpoint)
        noko_before = Counter(c.noko.stats.by_endpoint)
        quiet = c.engine.run_cycle()
        assert quiet.exit_code == 0 and sum(quiet.counts.values()) == 0
        assert dict(Counter(c.kantata.stats.by_endpoint) - kantata_before) == {
            "GET /invoices.json": 1
        }
        assert dict(Counter(c.noko.stats.by_endpoint) - noko_before) == {"GET /invoices": 1}
        assert quiet.cursor_after is not None
        kantata_now = box.kantata.now()
        assert kantata_now - timedelta(seconds=62) <= quiet.cursor_after
        assert quiet.cursor_after <= kantata_now - timedelta(seconds=60)
        # And a change after all that is still found.
        generate_more(box)
        found = c.engine.run_cycle()
        assert found.counts["pushed"] == 3
    assert check_books(box).problems == []


@pytest.mark.parametrize("kantata_ahead", [3600, -3600])
def test_the_cursor_trusts_the_earlier_of_both_clocks(
    box: Sandbox, tmp_path: Path, kantata_ahead: int
) -> None:
    """Kantata's clock ahead of this machine's or behind it: the cursor stays behind both."""
    generate(box.kantata, seed=26, invoices=20)
    box.kantata.advance_clock(kantata_ahead)
    with open_connector(settings_for(box, tmp_path, kantata_sync_clock_skew_seconds=60)) as c:
        local_start = c.engine.clock()
        kantata_start = box.kantata.now()
        result = c.engine.run_cycle()
        assert result.exit_code == 0
        assert result.cursor_after is not None
        earlier = min(local_start, kantata_start)
        assert result.cursor_after <= earlier - timedelta(seconds=59)
        assert result.cursor_after >= earlier - timedelta(seconds=62)


def test_without_a_date_header_the_cursor_is_the_newest_change_read(
    box: Sandbox, tmp_path: Path
) -> None:
    generate(box.kantata, seed=27, invoices=20)
    with open_connector(settings_for(box, tmp_path)) as c:
        original = c.kantata.iter_invoice_pages

        def without_date(**kwargs: Any) -> Iterator[KantataPage]:
            for page in original(**kwargs):
                yield KantataPage(page.body, page.page, page.count, page.page_count, None)

        c.kantata.iter_invoice_pages = without_date  # type: ignore[method-assign]
        result = c.engine.run_cycle()
        newest = max(r.kantata_updated_at for r in c.store.all_invoices() if r.kantata_updated_at)
        # The write-backs came after the scan read them; the newest read is from before.
        assert result.cursor_after is not None and result.cursor_after <= newest
        assert result.cursor_after < c.engine.clock() - timedelta(seconds=60)


@pytest.mark.parametrize("page_count_offset", [0, -1, -2, 2])
def test_pages_capped_at_100_lose_no_invoice(
    box: Sandbox, tmp_path: Path, page_count_offset: int
) -> None:
    """Kantata serving 100 a page although 200 were asked for, with a right, too low or too
    high `meta.page_count`: every invoice is read and synced, and the cursor moves."""
    generate(box.kantata, seed=28, invoices=330, draft_rate=0.0, cancelled_rate=0.0)
    box.kantata.set_paging(max_per_page=100, page_count_offset=page_count_offset)
    with open_connector(settings_for(box, tmp_path)) as c:
        result = c.engine.run_cycle()
        assert result.exit_code == 0, result.failed
        assert result.error is None
        assert result.pages >= 4
        assert _synced(c) == _eligible(box)
        assert result.cursor_after is not None
    assert check_books(box).problems == []


def test_invoices_counted_but_never_served_keep_the_cursor(box: Sandbox, tmp_path: Path) -> None:
    """A scan whose last page leaves counted rows unserved handles what it read, but the
    cursor stays where it was, and the cycle says why."""
    generate(box.kantata, seed=29, invoices=30)
    with open_connector(settings_for(box, tmp_path)) as c:
        first = c.engine.run_cycle()
        assert first.exit_code == 0
        cursor = c.store.get_cursor()
        assert cursor is not None
        _shift_clocks(box, c, 3600)
        generate_more(box)
        original = c.kantata.iter_invoice_pages

        def short_of_rows(**kwargs: Any) -> Iterator[KantataPage]:
            for page in original(**kwargs):
                yield dataclasses.replace(page, unseen=7)

        c.kantata.iter_invoice_pages = short_of_rows  # type: ignore[method-assign]
        result = c.engine.run_cycle()
        assert result.counts["pushed"] == 3
        assert c.store.get_cursor() == cursor
        assert result.cursor_after == cursor
        assert result.error is not None and "7 more invoice" in result.error


def _at_new_year(box: Sandbox) -> None:
    box.kantata.set_clock(datetime(2026, 1, 1, 9, 0, tzinfo=UTC), frozen=False)
    box.noko.set_clock(datetime(2026, 1, 1, 9, 0, tzinfo=UTC), frozen=False)


def test_a_backfill_starting_after_the_cursor_leaves_it_where_it_was(
    box: Sandbox, tmp_path: Path
) -> None:
    """A backfill whose window starts after the cursor reads nothing of what changed in
    between: it must not move the cursor past those changes, and the next sync finds them."""
    _at_new_year(box)
    generate(box.kantata, seed=30, invoices=20)
    with open_connector(settings_for(box, tmp_path)) as c:
        assert c.engine.run_cycle().exit_code == 0
        cursor = c.store.get_cursor()
        assert cursor is not None and cursor < datetime(2026, 1, 2, tzinfo=UTC)
        box.kantata.advance_clock(3600)
        generate_more(box)  # three invoices changed an hour after the sync
        box.kantata.advance_clock(2 * 86400)
        later = c.engine.run_cycle("backfill", since=datetime(2026, 1, 3, tzinfo=UTC))
        assert later.exit_code == 0
        assert later.counts["pushed"] == 0
        assert c.store.get_cursor() == cursor
        assert later.cursor_after == cursor
        found = c.engine.run_cycle()
        assert found.counts["pushed"] == 3
    assert check_books(box).problems == []


def test_a_backfill_covering_the_cursor_moves_it(box: Sandbox, tmp_path: Path) -> None:
    """A backfill from before the cursor (its lookback included) to now reads everything a
    sync would: it moves the cursor as a sync does. Without a cursor, a window with a start
    leaves older changes unread, so it sets none."""
    _at_new_year(box)
    generate(box.kantata, seed=31, invoices=20)
    with open_connector(settings_for(box, tmp_path)) as c:
        first = c.engine.run_cycle("backfill", since=datetime(2025, 12, 20, tzinfo=UTC))
        assert first.exit_code == 0
        assert c.store.get_cursor() is None
        assert c.engine.run_cycle().exit_code == 0
        cursor = c.store.get_cursor()
        assert cursor is not None
        box.kantata.advance_clock(86400)
        covering = c.engine.run_cycle("backfill", since=datetime(2025, 12, 31, tzinfo=UTC))
        assert covering.exit_code == 0
        assert covering.cursor_after is not None and covering.cursor_after > cursor
        assert c.store.get_cursor() == covering.cursor_after
