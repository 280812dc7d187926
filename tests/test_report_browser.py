"""The HTML status report in a real headless Chromium: the DOM it builds and a screenshot."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from datetime import UTC, datetime, timedelta
from html import escape, unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from connector.faces.report_html import render_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: browser test skipped"),
]

HEIGHT = 1600


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
    # A backfill of 100 three weeks ago, then a few invoices a day, a failure here and there.
    daily = [{"day": "2024-04-10", "synced": 100, "failed": 0, "open_failures": 0}]
    for day, synced, failed, still_open in [
        (11, 3, 0, 0), (12, 1, 1, 1), (15, 2, 0, 1), (16, 0, 2, 2), (17, 3, 0, 0),
        (22, 1, 0, 0), (24, 2, 1, 1), (25, 3, 0, 1), (29, 1, 0, 1), (30, 2, 1, 2),
    ]:  # fmt: skip
        daily.append(
            {
                "day": f"2024-04-{day:02d}",
                "synced": synced,
                "failed": failed,
                "open_failures": still_open,
            }
        )
    daily.append({"day": "2024-05-01", "synced": 17, "failed": 1, "open_failures": 2})
    return {
        "generated_at": "2024-05-01T09:30:00Z",
        "counts": {"synced": 1234, "failed": 1, "conflict": 1, "pending": 0, "skipped": 17},
        "cursor": "2024-05-01T09:25:00Z",
        "cursor_lag_seconds": 300.0,
        "failures": [
            {
                "kantata_invoice_id": "9001",
                "error": "line 3 has no currency <b>: the Kantata invoice's currency field is "
                "empty, and without a currency its amounts cannot be booked to the cent",
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
        "daily": daily,
    }


class Dom(HTMLParser):
    """The serialised DOM: attributes by element id, and the chart's day columns."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, str | None]] = {}
        self.days: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids[str(found["id"])] = {"tag": tag, **found}
        if tag == "div" and "day" in (found.get("class") or "").split():
            self.days.append(found)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("report")
    path = directory / "status.html"
    path.write_text(render_html(report()), encoding="utf-8")
    return path


def test_dom_has_counts_and_chart(page: Path, tmp_path: Path) -> None:
    """Chromium's DOM of the page holds the counts, the verdict and one chart column per day."""
    result = chromium(tmp_path / "profile", "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = Dom()
    dom.feed(result.stdout)
    assert dom.ids["count-synced"]["data-count"] == "1234"
    assert dom.ids["count-failed"]["data-count"] == "1"
    assert dom.ids["count-conflict"]["data-count"] == "1"
    assert dom.ids["verdict"]["data-verdict"] == "attention"
    assert dom.ids["chart"]["data-days"] == "28"
    assert dom.ids["chart"]["data-max"] == "100"
    assert len(dom.days) == 28
    assert dom.days[0]["data-day"] == "2024-04-04"
    assert dom.days[-1]["data-day"] == "2024-05-01"
    assert [d["data-synced"] for d in dom.days[-3:]] == ["1", "2", "17"]
    assert [d["data-open"] for d in dom.days[-3:]] == ["1", "2", "2"]
    assert "chart-legend" in dom.ids
    assert "runs" in dom.ids
    assert "failures" in dom.ids
    assert "conflicts" in dom.ids
    assert "line 3 has no currency &lt;b&gt;" in result.stdout


# Measures the laid-out page in the browser and writes what it found into the DOM.
MEASURE = """<script>
addEventListener("load", () => {
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== "hidden";
  };
  let smallest = 1000, smallestText = "";
  for (const el of document.body.querySelectorAll("*")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const label = getComputedStyle(el, "::before").content;
    if ((own || (label && label !== "none" && label !== '""')) && visible(el)) {
      const size = parseFloat(getComputedStyle(el).fontSize);
      if (own && size < smallest) { smallest = size; smallestText = el.textContent.trim(); }
      const before = parseFloat(getComputedStyle(el, "::before").fontSize);
      if (!own && before < smallest) { smallest = before; smallestText = label; }
    }
  }
  const cells = [...document.querySelectorAll("#failures td.why, #failures td.action")];
  const figures = [...document.querySelectorAll("#chart .figure")]
    .filter((el) => el.textContent.trim() && visible(el))
    .map((el) => { const r = el.getBoundingClientRect();
      return [r.left, r.top, r.right, r.bottom, el.textContent]; });
  let overlaps = 0;
  for (let i = 0; i < figures.length; i++)
    for (let j = i + 1; j < figures.length; j++) {
      const [a, b] = [figures[i], figures[j]];
      if (a[0] < b[2] - 0.5 && b[0] < a[2] - 0.5 && a[1] < b[3] - 0.5 && b[1] < a[3] - 0.5)
        overlaps++;
    }
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify({
    viewport: innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    smallest, smallestText,
    cells: cells.map((el) => { const r = el.getBoundingClientRect();
      return [r.left, r.right, r.width, el.textContent.length]; }),
    days: [...document.querySelectorAll("#chart .day")].filter(visible).length,
    figures: figures.length,
    overlaps,
  });
  parent.document.body.appendChild(out);
});
</script>"""


@pytest.mark.parametrize(("width", "days"), [(1400, 28), (420, 14)])
def test_page_reads_at_desktop_and_phone_width(
    page: Path, tmp_path: Path, width: int, days: int
) -> None:
    """Laid out by Chromium at 1400 and 420 px: nothing scrolls sideways, no text is smaller
    than 11 px, the failure's "why" and "what to do" are within the screen and wide enough to
    read, the chart shows its days (the last two weeks on a phone) and no two figures overlap."""
    # The page in a frame exactly `width` px wide (a headless window is at least 500 px wide),
    # measured from inside by MEASURE, which hands its findings to the outer page.
    framed = page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>")
    probe = tmp_path / "probe.html"
    probe.write_text(
        '<!DOCTYPE html><html><body style="margin:0">'
        f'<iframe srcdoc="{escape(framed, quote=True)}" '
        f'style="width:{width}px;height:1600px;border:0;display:block"></iframe></body></html>',
        encoding="utf-8",
    )
    result = chromium(
        tmp_path / "profile",
        "--window-size=1500,1700",
        "--hide-scrollbars",
        "--virtual-time-budget=2000",
        "--dump-dom",
        probe.as_uri(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="measured">(.*?)</pre>', result.stdout, re.S)
    assert found is not None, result.stdout[-2000:]
    measured = json.loads(unescape(found.group(1)))
    assert measured["viewport"] == width
    assert measured["scrollWidth"] <= width, measured
    assert measured["smallest"] >= 11, measured
    assert len(measured["cells"]) == 2
    for left, right, cell_width, _chars in measured["cells"]:
        assert left >= 0 and right <= width, measured
        assert cell_width >= min(200, width / 2), measured
    assert measured["days"] == days
    assert measured["figures"] > 0
    assert measured["overlaps"] == 0, measured


@pytest.mark.parametrize("width", [1400, 420])
def test_screenshot_is_a_full_page_image(page: Path, tmp_path: Path, width: int) -> None:
    """Chromium renders the page to a PNG of the requested size with real content in it, at
    desktop and at phone width (kept in the test's directory to look at)."""
    shot = tmp_path / f"report-{width}.png"
    result = chromium(
        tmp_path / "profile",
        f"--screenshot={shot}",
        f"--window-size={width},{HEIGHT}",
        "--hide-scrollbars",
        page.as_uri(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.is_file()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (width, HEIGHT)
    # A blank page of this size compresses to a few kilobytes; text and a chart do not.
    assert len(data) > 40_000
