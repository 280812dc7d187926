"""render_html: the status report as one self-contained HTML page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest

from connector.report import build_report
from connector.report_html import render_html, verdict
from connector.store import Store

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


def test_chart_has_one_point_per_run_oldest_first() -> None:
    """The SVG has a pushed and a failed point per cycle, left to right from oldest to newest."""
    report = sample_report(runs=6)
    page = render_html(report)
    tags = check(page)
    assert tags.ids["chart"]["data-points"] == "6"
    pushed = re.findall(r'<circle cx="([\d.]+)"[^>]*class="point point-pushed"[^>]*'
                        r'data-run-id="([^"]+)"[^>]*data-value="(\d+)"', page)  # fmt: skip
    failed = re.findall(r'class="point point-failed"', page)
    assert len(pushed) == 6
    assert len(failed) == 6
    xs = [float(x) for x, _, _ in pushed]
    assert xs == sorted(xs)
    assert xs[0] < xs[-1]
    assert [run_id for _, run_id, _ in pushed] == [f"run-{i}" for i in range(6)]
    assert [int(value) for _, _, value in pushed] == [10 * i + 1 for i in range(6)]
    assert page.count('class="stem stem-pushed"') == 6  # a stem for every non-zero count
    assert page.count('class="stem stem-failed"') == 4
    assert "<polyline" not in page  # cycles are separate events, not joined by a line
    assert page.count('class="failed-label"') == 4  # cycles 1, 2, 4 and 5 had failures
    assert "synced (pushed to Noko)" in page
    assert "invoices per cycle" in page
    assert "cycle start (UTC), 2024-05-01" in page


def test_chart_x_axis_uses_round_times() -> None:
    """X-axis ticks fall on round times (every 5 minutes for a 25-minute history)."""
    page = render_html(sample_report(runs=6))
    axis = page[page.index('id="chart-x-axis"') : page.index('id="chart-pushed"')]
    labels = re.findall(r">(\d\d:\d\d)</text>", axis)
    assert labels == ["09:00", "09:05", "09:10", "09:15", "09:20", "09:25"]


def test_chart_with_one_run() -> None:
    """A single cycle is drawn as one point per series in the middle of the time axis."""
    report = sample_report(runs=1)
    page = render_html(report)
    tags = check(page)
    assert tags.ids["chart"]["data-points"] == "1"
    assert page.count('class="point point-pushed"') == 1
    (x,) = re.findall(r'<circle cx="([\d.]+)"[^>]*class="point point-pushed"', page)
    assert float(x) == pytest.approx(64 + (960 - 64 - 24) / 2 - 4)  # the middle, left of failed


def test_chart_skips_runs_without_a_start_time() -> None:
    """A cycle without a readable start time is left out of the chart but kept in the table."""
    report = sample_report(runs=3)
    report["runs"][0]["started_at"] = "not a time"
    page = render_html(report)
    assert 'data-points="2"' in page
    assert page.count('<tr data-run-id="run-') == 3


@pytest.mark.parametrize("report", [{}, {"counts": {}, "runs": None, "failures": "junk"}])
def test_missing_or_malformed_parts_still_render(report: dict[str, Any]) -> None:
    """A report with parts missing or of the wrong type still renders a page."""
    page = render_html(report)
    check(page)
    assert 'data-points="0"' in page
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
    assert tags.ids["chart"]["data-points"] == "0"
    assert "No sync cycles recorded yet" in page
    assert "none yet: the next sync reads everything" in page
    assert "no sync cycle has run yet" in page
    assert "No failed invoices." in page
    assert "<circle" not in page.split('id="chart-legend"')[1].split("</g>", 1)[1]


def test_running_cycle_is_listed_but_not_drawn() -> None:
    """A cycle still running is in the table but not on the chart, and does not hide an abort."""
    report = sample_report(runs=3)
    report.update(failures=[], conflicts=[])
    report["counts"].update(failed=0, conflict=0)
    report["runs"][0].update(outcome="running", pushed=0, failed=0, duration_seconds=None)
    page = render_html(report)
    assert 'data-points="2"' in page
    assert '<tr data-run-id="run-2" data-outcome="running">' in page
    assert "a cycle is running since 2024-05-01 09:10:00 UTC" in page
    assert '<body data-verdict="healthy">' in page
    report["runs"][1].update(outcome="aborted", error="Kantata unreachable")
    healthy, reasons = verdict(report)
    assert not healthy
    assert reasons == ["the last cycle (2024-05-01 09:05:00 UTC) aborted: Kantata unreachable"]
