"""Text from outside, made safe to keep and to show: one place for it.

Anything an API answered (an error body, a message) may echo a credential or carry terminal
control sequences. `clean` is the one function every such text passes through before it is
stored, logged, shown, or sent to Kantata: it removes every fragment of a known secret first,
then neutralises control characters, and only then shortens the text. In that order a token
that straddles the cut is still whole when it is looked for.

Secrets are known two ways: registered once per process (`register_secret`, the configured
tokens) and passed by a caller (the credentials of one HTTP client).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["FRAGMENT", "clean", "neutralise", "redact", "register_secret", "registered"]

FRAGMENT = 8
"""A run of this many characters of a secret is a fragment of it, and is removed."""
MIN_SECRET = 4
"""Shorter values are not treated as secrets (they would match everywhere)."""
REDACTED = "[redacted]"
RAW_LIMIT = 65536
"""Text longer than this is cut to it before anything else when a limit is asked for."""

_lock = threading.Lock()
_registered: frozenset[str] = frozenset()

# C0 controls but tab and newline, DEL, C1 controls (CSI 0x9b among them), and the Unicode
# bidirectional overrides that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE = re.compile("[\t\n]")


def register_secret(value: str | None) -> None:
    """Make sure this value, and every fragment of it, never leaves the process in text."""
    global _registered
    value = (value or "").strip()
    if len(value) >= MIN_SECRET:
        with _lock:
            _registered = _registered | {value}


def registered() -> frozenset[str]:
    return _registered


_BLOCK = FRAGMENT // 2


@lru_cache(maxsize=64)
def _pattern(secrets: frozenset[str]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    """One regex finding where a fragment of any secret starts (zero-width, so that fragments
    that overlap are all found; a secret shorter than a fragment is looked for whole), and the
    blocks that make a quick test first: every run of `FRAGMENT` characters of a secret holds
    one of its `FRAGMENT // 2`-character blocks at a multiple of that, so text holding none of
    them (nearly all text) holds no fragment: one regex of a few short literals, about a
    quarter of the cost of the full one."""
    grams: set[str] = set()
    blocks: set[str] = set()
    for secret in secrets:
        if len(secret) < FRAGMENT:
            grams.add(secret)
            blocks.add(secret)
        else:
            grams.update(secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1))
            blocks.update(
                secret[i : i + _BLOCK] for i in range(0, len(secret) - _BLOCK + 1, _BLOCK)
            )
    if not grams:
        return None, None
    ordered = sorted(grams, key=lambda g: (-len(g), g))
    pattern = re.compile("(?=(" + "|".join(re.escape(g) for g in ordered) + "))")
    quick = re.compile("|".join(re.escape(b) for b in sorted(blocks, key=lambda b: (-len(b), b))))
    return quick, pattern


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without any run of `FRAGMENT` or more characters of a registered secret or of
    one of `secrets` (each run replaced by one `[redacted]`)."""
    if not text:
        return text
    extra = frozenset(s for s in secrets if len(s) >= MIN_SECRET) if secrets else None
    quick, pattern = _pattern(_registered | extra if extra else _registered)
    if quick is None or pattern is None or quick.search(text) is None:
        return text
    spans: list[list[int]] = []
    for match in pattern.finditer(text):
        start = match.start()
        end = start + len(match.group(1))
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    if not spans:
        return text
    out: list[str] = []
    at = 0
    for start, end in spans:
        out.append(text[at:start])
        out.append(REDACTED)
        at = end
    out.append(text[at:])
    return "".join(out)


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def neutralise(text: str, *, newlines: bool = False) -> str:
    """Control characters (ESC, CSI, BEL, carriage return, bidi overrides...) written out as
    visible escapes (`\\x1b`), so a terminal shows them instead of obeying them. Tabs and
    newlines become spaces unless `newlines` keeps them (a traceback on a console)."""
    if text.isprintable():
        return text
    if not newlines:
        text = _LINE.sub(" ", text)
    return _CONTROL.sub(_visible, text)


def clean(text: str, limit: int | None = None, *, secrets: Iterable[str] = ()) -> str:
    """Outside text made safe, in this order: secrets removed, controls neutralised, spaces
    collapsed to one line, then cut to `limit` characters (with an ellipsis)."""
    if limit is not None and len(text) > RAW_LIMIT:
        # A huge body costs no more than its start: safe to cut first, because any piece of a
        # secret as long as a fragment that the cut leaves is still found and removed.
        text = text[:RAW_LIMIT]
    flat = " ".join(neutralise(redact(text, secrets)).split())
    if limit is not None and len(flat) > limit:
        flat = flat[: max(limit - 1, 0)] + "…"
    return flat
