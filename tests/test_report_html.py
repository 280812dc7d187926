"""render_html: the status report as one self-contained HTML page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest

from connector.faces.report import build_report
from connector.faces.report_html import render_html, verdict
from connector.state.store import Store

EVIL = "<script>alert('x')</script>&\""

VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "area", "base", "col", "source"}
SVG_EMPTY_OK = {"line", "circle", "polyline", "path", "rect"}


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def make_run(index: int, start: datetime, pushed: int, failed: int, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": f"run-{index}",
        "kind": "sync",
        "started_at": iso(start),
        "finished_at": iso(start + timedelta(seconds=9)),
        "duration_seconds": 9.0,
        "outcome": "failed" if failed else "ok",
        "seen": pushed + failed + 5,
        "pushed": pushed,
        "unchanged": 5,
        "skipped": 0,
        "failed": failed,
        "error": None,
        **extra,
    }


def sample_report(runs: int = 6) -> dict[str, Any]:
    t0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    history = [
        make_run(i, t0 + timedelta(minutes=5 * i), pushed=10 * i + 1, failed=i % 3)
        for i in range(runs)
    ]
    return {
        "generated_at": "2024-05-01T10:00:00Z",
        "counts": {"synced": 1234, "failed": 2, "conflict": 1, "pending": 3, "skipped": 17},
        "cursor": "2024-05-01T09:55:00Z",
        "cursor_lag_seconds": 300.0,
        "failures": [
            {
                "kantata_invoice_id": "9001",
                "error": "line 3 has no currency",
                "error_kind": "mapping",
                "attempts": 2,
                "next_attempt_at": None,
                "noko_invoice_id": None,
                "amount": "USD 1,250.00",
                "action": "Fix it in Kantata (or run `kantata-sync retry 9001`).",
            },
            {
                "kantata_invoice_id": "9002",
                "error": "Noko answered 503",
                "error_kind": "transient",
                "attempts": 4,
                "next_attempt_at": "2024-05-01T10:30:00Z",
                "noko_invoice_id": None,
                "amount": None,
                "action": "Retried automatically.",
            },
        ],
        "conflicts": [
            {
                "kantata_invoice_id": "8001",
                "reason": "edited by hand in Noko",
                "noko_invoice_id": 5521,
                "noko_link": "https://example.invalid/invoices/5521",
                "action": "Review it, then run `kantata-sync retry 8001 --force`.",
            }
        ],
        "warnings": [{"kantata_invoice_id": "7001", "message": "balance differs from lines"}],
        "runs": list(reversed(history)),  # build_report lists the newest cycle first
    }


class TagChecker(HTMLParser):
    """Records ids and checks that every opened element is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: dict[str, dict[str, str | None]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            if found["id"] in self.ids:
                self.errors.append(f"duplicate id {found['id']}")
            self.ids[str(found["id"])] = found
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids[str(found["id"])] = found
        if tag not in VOID and tag not in SVG_EMPTY_OK:
            self.errors.append(f"self-closed <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()


def check(page: str) -> TagChecker:
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    return checker


def test_counts_appear_as_figures_with_stable_ids() -> None:
    """Each state's count is in an element #count-<state> with a data-count attribute."""
    page = render_html(sample_report())
    tags = check(page)
    expected = {"synced": 1234, "failed": 2, "conflict": 1, "pending": 3, "skipped": 17}
    for state, value in expected.items():
        assert tags.ids[f"count-{state}"]["data-count"] == str(value)
    assert 'data-count="1234">1,234<' in page


def test_cursor_and_lag_are_shown() -> None:
    """The cursor and its lag are shown, readable and as machine-readable attributes."""
    page = render_html(sample_report())
    tags = check(page)
    assert tags.ids["cursor"]["data-cursor"] == "2024-05-01T09:55:00Z"
    assert tags.ids["cursor-lag"]["data-seconds"] == "300"
    assert "2024-05-01 09:55:00 UTC" in page
    assert "5 min behind" in page


def test_attention_verdict_lists_the_reasons() -> None:
    """Failures and conflicts make the headline 'attention needed' with a reason for each."""
    page = render_html(sample_report())
    assert '<body data-verdict="attention">' in page
    assert "Attention needed" in page
    assert "2 invoices failed" in page
    assert "1 conflict needs a decision by a person" in page


def test_healthy_verdict() -> None:
    """No failures, no conflicts, a recent cycle and a fresh cursor read as healthy."""
    report = sample_report()
    report.update(failures=[], conflicts=[], warnings=[])
    report["counts"].update(failed=0, conflict=0)
    assert verdict(report) == (True, [])
    page = render_html(report)
    assert '<body data-verdict="healthy">' in page
    assert "Healthy" in page


def test_stale_cursor_and_aborted_cycle_need_attention() -> None:
    """A cursor hours behind and a last cycle that aborted each make the page ask for attention."""
    report = sample_report()
    report.update(failures=[], conflicts=[], cursor_lag_seconds=3 * 3600.0)
    report["counts"].update(failed=0, conflict=0)
    report["runs"][0].update(outcome="aborted", error="Kantata unreachable")
    healthy, reasons = verdict(report)
    assert not healthy
    assert any("3.0 h behind" in reason for reason in reasons)
    assert any("aborted: Kantata unreachable" in reason for reason in reasons)
    assert 'id="cursor-lag" data-seconds="10800" class="stale"' in render_html(report)


def test_every_string_is_escaped() -> None:
    """Markup in any report string comes out as text, never as markup."""
    report = sample_report(runs=2)
    report["failures"][0].update(kantata_invoice_id=EVIL, error=EVIL, action=f"run `{EVIL}`")
    report["conflicts"][0].update(reason=EVIL, noko_invoice_id=EVIL, action=EVIL)
    report["warnings"][0].update(kantata_invoice_id=EVIL, message=EVIL)
    report["runs"][0].update(run_id=EVIL, kind=EVIL, outcome=EVIL, error=EVIL)
    report["cursor"] = EVIL
    page = render_html(report)
    check(page)
    assert "<script" not in page
    assert "alert(&#x27;x&#x27;)" in page
    assert "&lt;script&gt;" in page
    assert f"<code>{EVIL}</code>" not in page


def test_only_web_links_become_links() -> None:
    """A Noko link that is not http(s) is not turned into an href."""
    report = sample_report()
    report["conflicts"][0]["noko_link"] = "javascript:alert(1)"
    page = render_html(report)
    assert "javascript:" not in page
    report["conflicts"][0]["noko_link"] = "https://example.invalid/i?a=1&b=2"
    assert 'href="https://example.invalid/i?a=1&amp;b=2"' in render_html(report)


def test_commands_in_actions_are_code() -> None:
    """Backticked commands in 'what to do' are shown as <code> to copy."""
    page = render_html(sample_report())
    assert "<code>kantata-sync retry 9001</code>" in page
    assert "<code>kantata-sync retry 8001 --force</code>" in page


def test_page_is_self_contained() -> None:
    """No scripts, stylesheets, images or fonts are loaded from anywhere."""
    page = render_html(sample_report())
    lowered = page.lower()
    for needle in ("<script", "<link", "<img", "src=", "@import", "url("):
        assert needle not in lowered
    assert "<style>" in page


def daily_report(rows: list[tuple[str, int, int, int]]) -> dict[str, Any]:
    report = sample_report()
    report["daily"] = [
        {"day": day, "synced": synced, "failed": failed, "open_failures": still_open}
        for day, synced, failed, still_open in rows
    ]
    return report


def days_of(page: str) -> list[dict[str, str]]:
    return [
        dict(re.findall(r'(data-[a-z]+)="([^"]*)"', found))
        for found in re.findall(r'<div class="day(?: [^"]*)?"([^>]*)>', page)
    ]


def test_chart_has_one_column_per_day_of_the_last_four_weeks() -> None:
    """28 UTC days up to the report's day, oldest first; days without activity are zero and
    the open failures carry over; days before anything is known show no backlog."""
    page = render_html(
        daily_report([("2024-04-20", 100, 0, 0), ("2024-04-29", 3, 2, 2), ("2024-05-01", 1, 0, 1)])
    )
    check(page)
    days = days_of(page)
    assert len(days) == 28
    assert days[0]["data-day"] == "2024-04-04" and days[-1]["data-day"] == "2024-05-01"
    by_day = {d["data-day"]: d for d in days}
    assert (by_day["2024-04-20"]["data-synced"], by_day["2024-04-20"]["data-failed"]) == (
        "100",
        "0",
    )
    assert by_day["2024-04-19"]["data-open"] == ""  # nothing known yet
    assert by_day["2024-04-21"]["data-open"] == "0"
    assert by_day["2024-04-30"]["data-open"] == "2"  # carried over from the day before
    assert by_day["2024-04-30"]["data-synced"] == "0"
    assert by_day["2024-05-01"]["data-open"] == "1"
    assert page.count('class="day old') == 14  # hidden on a phone: the last two weeks stay


def test_chart_heights_grow_with_the_square_root_and_figures_are_exact() -> None:
    """A backfill day of 100 does not flatten a day of 4 (20% of the height, not 4%); on a
    phone the last two weeks are scaled to their own largest; a figure too wide for a column
    is written short."""
    page = render_html(daily_report([("2024-04-10", 100, 0, 0), ("2024-04-29", 4, 1, 1)]))
    assert '<div class="bar synced" style="--h:100.0%;--h-recent:100.0%">' in page  # hidden
    # On a phone only the last two weeks show, scaled to their own largest figure.
    assert '<div class="bar synced" style="--h:20.0%;--h-recent:100.0%">' in page
    assert '<div class="bar failed" style="--h:10.0%;--h-recent:50.0%">' in page
    assert '<span class="figure synced">100</span>' in page
    assert '<span class="figure failed">1</span>' in page
    big = render_html(daily_report([("2024-04-20", 1234, 0, 0), ("2024-04-21", 56789, 0, 0)]))
    assert '<span class="figure synced">1.2k</span>' in big
    assert '<span class="figure synced">56k</span>' in big
    assert 'data-synced="56789"' in big and "56,789" not in big.split('id="chart"')[0]


def test_daily_activity_counts_each_invoice_once_a_day_and_the_backlog() -> None:
    """From the invoice histories: invoices synced and failed per day (an invoice tried twice
    counts once), and the open failures (failed or in conflict) at each day's end."""
    store = Store("sqlite://")
    clock = [datetime(2024, 4, 28, 9, tzinfo=UTC)]
    events = [
        (datetime(2024, 4, 28, 9, tzinfo=UTC), "A", "synced"),
        (datetime(2024, 4, 28, 10, tzinfo=UTC), "B", "failed"),
        (datetime(2024, 4, 28, 11, tzinfo=UTC), "B", "failed"),
        (datetime(2024, 4, 28, 12, tzinfo=UTC), "C", "failed"),
        (datetime(2024, 4, 29, 9, tzinfo=UTC), "B", "synced"),
        (datetime(2024, 4, 29, 10, tzinfo=UTC), "C", "failed"),
        (datetime(2024, 4, 29, 11, tzinfo=UTC), "D", "conflict"),
        (datetime(2024, 5, 1, 9, tzinfo=UTC), "C", "skipped"),
    ]
    import connector.state.store as store_module

    original = store_module.utcnow
    store_module.utcnow = lambda: clock[0]
    try:
        for at, kantata_id, event in events:
            clock[0] = at
            record = store.get_invoice(kantata_id) or store.new_invoice(kantata_id)
            store.save_invoice(record, run_id="r", event=event, detail="")
        rows = store.daily_activity(datetime(2024, 4, 4, tzinfo=UTC))
        assert rows == [
            ("2024-04-28", 1, 2, 2),
            ("2024-04-29", 1, 1, 2),
            ("2024-05-01", 0, 0, 1),
        ]
        assert store.daily_activity(datetime(2024, 4, 30, tzinfo=UTC)) == [("2024-05-01", 0, 0, 1)]
        report = build_report(store, now=datetime(2024, 5, 1, 12, tzinfo=UTC))
    finally:
        store_module.utcnow = original
        store.close()
    assert report["daily"][0] == {
        "day": "2024-04-28",
        "synced": 1,
        "failed": 2,
        "open_failures": 2,
    }
    days = {d["data-day"]: d for d in days_of(render_html(report))}
    assert days["2024-04-30"]["data-open"] == "2"
    assert days["2024-05-01"]["data-open"] == "1"


@pytest.mark.parametrize("report", [{}, {"counts": {}, "runs": None, "failures": "junk"}])
def test_missing_or_malformed_parts_still_render(report: dict[str, Any]) -> None:
    """A report with parts missing or of the wrong type still renders a page."""
    page = render_html(report)
    check(page)
    assert 'data-active-days="0"' in page
    assert 'id="count-synced" data-count="0"' in page


def test_empty_store_report_renders() -> None:
    """The report of an empty state database renders with zero counts and an empty chart."""
    store = Store("sqlite://")
    try:
        report = build_report(store, now=datetime(2024, 5, 1, tzinfo=UTC))
    finally:
        store.close()
    page = render_html(report)
    tags = check(page)
    for state in ("synced", "failed", "conflict", "pending", "skipped"):
        assert tags.ids[f"count-{state}"]["data-count"] == "0"
    assert tags.ids["chart"]["data-active-days"] == "0"
    assert "No invoice was synced or failed in the last four weeks." in page
    assert "No sync cycles recorded yet" in page
    assert "none yet: the next sync reads everything" in page
    assert "no sync cycle has run yet" in page
    assert "No failed invoices." in page


def test_running_cycle_is_listed_but_not_drawn() -> None:
    """A cycle still running is in the table but not on the chart, and does not hide an abort."""
    report = sample_report(runs=3)
    report.update(failures=[], conflicts=[])
    report["counts"].update(failed=0, conflict=0)
    report["runs"][0].update(outcome="running", pushed=0, failed=0, duration_seconds=None)
    page = render_html(report)
    assert '<tr data-run-id="run-2" data-outcome="running">' in page
    assert "a cycle is running since 2024-05-01 09:10:00 UTC" in page
    assert '<body data-verdict="healthy">' in page
    report["runs"][1].update(outcome="aborted", error="Kantata unreachable")
    healthy, reasons = verdict(report)
    assert not healthy
    assert reasons == ["the last cycle (2024-05-01 09:05:00 UTC) aborted: Kantata unreachable"]


def test_each_month_is_named_once_at_each_width() -> None:
    """The desktop chart names a month at its first column and on each 1st; the first day a
    phone shows is named too, but only on a phone (on a desktop it would repeat a month)."""
    import re

    page = render_html(daily_report([("2024-04-29", 3, 0, 0)]))  # 2024-04-02 .. 2024-04-29
    check(page)
    shown_always = re.findall(r'<span class="month">(\w+)</span>', page)
    phone_only = re.findall(r'<span class="month phone-first">(\w+)</span>', page)
    assert shown_always[0] == "Apr"  # the first column names its month
    assert len(shown_always) == len(set(shown_always))  # no month named twice on a desktop
    assert phone_only == ["Apr"]  # the phone's first day, named there only
    assert ".chart .month.phone-first { display: none; }" in page
