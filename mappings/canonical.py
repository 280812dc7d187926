"""Canonical JSON for fingerprints: the bytes of

    json.dumps(value, sort_keys=True, default=default, separators=(",", ":")).encode()

made by msgspec (C) instead of the standard library's encoder, several times faster. Stored
fingerprints were made by `json.dumps`, so the two must agree byte for byte. They do on plain
JSON values (dicts with string keys, lists, strings, integers, booleans, None) and `Decimal`s
(both write `str(value)` in quotes), once the characters `json.dumps` escapes and msgspec writes
as they are (DEL and everything past ASCII, which can only stand inside strings) are escaped
the same way afterwards. Any value msgspec will not encode is left to the standard library.
Callers pass only those value types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["canonical_json"]

_ENCODER = msgspec.json.Encoder(order="sorted", decimal_format="string")


def canonical_json(value: Any, default: Callable[[Any], Any]) -> bytes:
    """`json.dumps(value, sort_keys=True, default=default, separators=(",", ":"))`, encoded."""
    try:
        blob = _ENCODER.encode(value)
    except (TypeError, ValueError, msgspec.EncodeError):  # UnicodeError is a ValueError
        text = json.dumps(value, sort_keys=True, default=default, separators=(",", ":"))
        return text.encode()
    if blob.isascii() and b"\x7f" not in blob:
        return blob
    return _ESCAPED.sub(_escape, blob.decode("utf-8")).encode("ascii")


# What `json.dumps` (ensure_ascii) writes as \uXXXX: DEL and every character past ASCII, those
# past the Basic Multilingual Plane as a surrogate pair, in lower-case hexadecimal.
_ESCAPED = re.compile("[\x7f-\U0010ffff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"
