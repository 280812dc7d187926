"""The HTML status report in a real headless Chromium: the DOM it builds and a screenshot."""

from __future__ import annotations

import shutil
import struct
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from connector.report_html import render_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: browser test skipped"),
]

WIDTH, HEIGHT = 1200, 1600


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def report() -> dict[str, Any]:
    t0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    runs = []
    for i, (pushed, failed) in enumerate([(80, 0), (12, 0), (5, 2), (9, 0), (0, 0), (3, 1)]):
        start = t0 + timedelta(minutes=5 * i)
        runs.append(
            {
                "run_id": f"run-{i}",
                "kind": "backfill" if i == 0 else "sync",
                "started_at": start.isoformat().replace("+00:00", "Z"),
                "finished_at": (start + timedelta(seconds=8)).isoformat().replace("+00:00", "Z"),
                "duration_seconds": 8.0,
                "outcome": "failed" if failed else "ok",
                "seen": pushed + failed + 30,
                "pushed": pushed,
                "unchanged": 30,
                "skipped": 0,
                "failed": failed,
                "error": None,
            }
        )
    return {
        "generated_at": "2024-05-01T09:30:00Z",
        "counts": {"synced": 1234, "failed": 1, "conflict": 1, "pending": 0, "skipped": 17},
        "cursor": "2024-05-01T09:25:00Z",
        "cursor_lag_seconds": 300.0,
        "failures": [
            {
                "kantata_invoice_id": "9001",
                "error": "line 3 has no currency <b>",
                "error_kind": "mapping",
                "attempts": 2,
                "next_attempt_at": None,
                "noko_invoice_id": None,
                "amount": "USD 1,250.00",
                "action": "Fix the field in Kantata (or run `kantata-sync retry 9001`).",
            }
        ],
        "conflicts": [
            {
                "kantata_invoice_id": "8001",
                "reason": "edited by hand in Noko",
                "noko_invoice_id": 5521,
                "noko_link": None,
                "action": "Review it, then run `kantata-sync retry 8001 --force`.",
            }
        ],
        "warnings": [],
        "runs": list(reversed(runs)),
    }


class Dom(HTMLParser):
    """The serialised DOM: attributes by element id, and every SVG circle."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, str | None]] = {}
        self.circles: list[dict[str, str | None]] = []
        self.stems: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids[str(found["id"])] = {"tag": tag, **found}
        if tag == "circle":
            self.circles.append(found)
        if tag == "line" and "stem" in (found.get("class") or ""):
            self.stems.append(found)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("report")
    path = directory / "status.html"
    path.write_text(render_html(report()), encoding="utf-8")
    return path


def test_dom_has_counts_and_chart(page: Path, tmp_path: Path) -> None:
    """Chromium's DOM of the page holds the counts, the verdict and one chart point per cycle."""
    result = chromium(tmp_path / "profile", "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = Dom()
    dom.feed(result.stdout)
    assert dom.ids["count-synced"]["data-count"] == "1234"
    assert dom.ids["count-failed"]["data-count"] == "1"
    assert dom.ids["count-conflict"]["data-count"] == "1"
    assert dom.ids["verdict"]["data-verdict"] == "attention"
    assert dom.ids["chart"]["tag"] == "svg"
    assert dom.ids["chart"]["data-points"] == "6"
    pushed = [c for c in dom.circles if "point-pushed" in (c.get("class") or "")]
    failed = [c for c in dom.circles if "point-failed" in (c.get("class") or "")]
    assert [c["data-value"] for c in pushed] == ["80", "12", "5", "9", "0", "3"]
    assert [c["data-value"] for c in failed] == ["0", "0", "2", "0", "0", "1"]
    assert len(dom.stems) == 5 + 2  # one per non-zero count
    assert "chart-legend" in dom.ids
    assert "runs" in dom.ids
    assert "failures" in dom.ids
    assert "conflicts" in dom.ids
    assert "line 3 has no currency &lt;b&gt;" in result.stdout


def test_screenshot_is_a_full_page_image(page: Path, tmp_path: Path) -> None:
    """Chromium renders the page to a PNG of the requested size with real content in it."""
    shot = tmp_path / "shot.png"
    result = chromium(
        tmp_path / "profile",
        f"--screenshot={shot}",
        f"--window-size={WIDTH},{HEIGHT}",
        page.as_uri(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.is_file()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (WIDTH, HEIGHT)
    # A blank page of this size compresses to a few kilobytes; text and a chart do not.
    assert len(data) > 40_000
