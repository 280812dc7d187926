"""Canonical JSON for fingerprints: the bytes of

    json.dumps(value, sort_keys=True, default=default, separators=(",", ":")).encode()

made by msgspec (C) instead of the standard library's encoder, several times faster. Stored
fingerprints were made by `json.dumps`, so the two must agree byte for byte: they do on plain
JSON values (dicts with string keys, lists, strings, integers, booleans, None) and `Decimal`s
(both write `str(value)` in quotes). Where they could differ, the standard library writes the
result: a non-ASCII or DEL character (escaped by `json.dumps`, raw in msgspec) or any value
msgspec will not encode. Callers pass only those value types.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["canonical_json"]

_ENCODER = msgspec.json.Encoder(order="sorted", decimal_format="string")


def canonical_json(value: Any, default: Callable[[Any], Any]) -> bytes:
    """`json.dumps(value, sort_keys=True, default=default, separators=(",", ":"))`, encoded."""
    try:
        blob = _ENCODER.encode(value)
    except (TypeError, ValueError, msgspec.EncodeError):
        blob = None
    if blob is None or not blob.isascii() or b"\x7f" in blob:
        text = json.dumps(value, sort_keys=True, default=default, separators=(",", ":"))
        return text.encode()
    return blob
