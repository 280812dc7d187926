"""Can the public Singer tap for this API (`tap-mavenlink`) be pointed at the sandbox?

The tap is fetched with `pip download` into a temporary directory (never installed) and its
source is read: the benchmark would time its read of the same invoices only if its base URL
could be set to the sandbox's. `check_tap` says whether it can, and why not.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TapCheck", "check_tap"]

PACKAGE = "tap-mavenlink"


@dataclass(frozen=True)
class TapCheck:
    usable: bool
    version: str
    reason: str


def _unpack(archive: Path, into: Path) -> None:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            wheel.extractall(into)  # noqa: S202 - a package we only read
    else:
        with tarfile.open(archive) as sdist:
            sdist.extractall(into, filter="data")


def check_tap(timeout: float = 180.0) -> TapCheck:
    """Download the tap's source and look for a way to set its base URL."""
    with tempfile.TemporaryDirectory(prefix="tap-mavenlink-") as tmp:
        where = Path(tmp)
        try:
            done = subprocess.run(
                [
                    *(sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"),
                    *("--disable-pip-version-check", "--retries", "1", "--timeout", "20"),
                    *("-d", tmp, PACKAGE),
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return TapCheck(False, "?", f"`pip download {PACKAGE}` timed out")
        archives = [p for p in where.iterdir() if p.suffix in (".whl", ".gz")]
        if done.returncode != 0 or not archives:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return TapCheck(False, "?", f"`pip download {PACKAGE}` failed: {last}")
        archive = archives[0]
        version = re.sub(r"^tap[-_]mavenlink-", "", archive.name).split("-")[0]
        version = version.removesuffix(".tar.gz")
        source = where / "src"
        _unpack(archive, source)
        base = next(source.rglob("tap_mavenlink/streams/base.py"), None)
        if base is None:
            return TapCheck(False, version, "its source has no tap_mavenlink/streams/base.py")
        text = base.read_text("utf-8")
        url_method = re.search(r"def get_url\(self\):\s*\n\s*return (.+)", text)
        hardcoded = url_method is not None and "https://api.mavenlink.com" in url_method.group(1)
        package_text = "\n".join(
            p.read_text("utf-8") for p in source.rglob("tap_mavenlink/**/*.py")
        )
        configurable = (
            re.search(r"config(?:\.get\(|\[)\s*['\"](base_url|api_url|url|host)", package_text)
            is not None
        )
        invoices = next(source.rglob("tap_mavenlink/streams/invoices.py"), None)
        invoices_text = invoices.read_text("utf-8") if invoices is not None else ""
        reads_lines = "include" in invoices_text
        if hardcoded and not configurable:
            reason = (
                f"{PACKAGE} {version} cannot be pointed at the sandbox: "
                f"BaseStream.get_url returns {url_method.group(1).strip()} "  # type: ignore[union-attr]
                "(a hard-coded https://api.mavenlink.com/api/v1) and no config key or "
                "environment variable replaces it; only editing its code, or DNS plus a "
                "trusted TLS certificate for api.mavenlink.com, would redirect it."
            )
            if not reads_lines:
                reason += (
                    " Its invoices stream also reads /invoices.json without include, so it "
                    "would read invoice headers only, not the line items."
                )
            return TapCheck(False, version, reason)
        return TapCheck(
            True,
            version,
            f"{PACKAGE} {version} may take a base URL from its config; not timed by this "
            "benchmark version: check by hand before comparing",
        )
