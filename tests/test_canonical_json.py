"""Fingerprints stored by earlier versions were made with `json.dumps`; the faster canonical
encoder must give the same bytes for every value a fingerprint is made of."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mappings.canonical import canonical_json


def _reference(value: Any, default: Any = str) -> bytes:
    return json.dumps(value, sort_keys=True, default=default, separators=(",", ":")).encode()


_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)  # surrogates too
_ASCII = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=12)
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | _TEXT
    | _ASCII
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT | _ASCII, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_same_bytes_as_json_dumps(value: Any) -> None:
    assert canonical_json(value, str) == _reference(value)


def test_characters_json_dumps_escapes_are_escaped_the_same_way() -> None:
    value = {
        "b": "caf\u00e9 \x7f \u2028",
        "\u00e9": "\U0001f600",
        "a": [Decimal("1E+2"), Decimal("-0.50"), "\b\f\x00"],
    }
    assert canonical_json(value, str) == _reference(value)
    assert b"\\ud83d\\ude00" in canonical_json(value, str)


def test_a_lone_surrogate_is_written_by_the_standard_library() -> None:
    assert canonical_json(["\ud800"], str) == _reference(["\ud800"]) == b'["\\ud800"]'


def test_a_value_msgspec_cannot_encode_goes_to_the_default() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    assert canonical_json({"x": Odd()}, str) == b'{"x":"odd"}'
