"""JSON in and out of the HTTP boundary: numbers as `Decimal`, never float; NaN and Infinity
refused."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NoReturn

import msgspec


def _reject_constant(name: str) -> NoReturn:
    # NaN and Infinity are not JSON and never a valid amount.
    raise ValueError(f"non-finite number {name} in JSON")


# One decoder and one encoder for every body (msgspec, in C): numbers with a fraction or an
# exponent decode to exact `Decimal`s and `Decimal`s encode as JSON numbers, never via float.
# msgspec refuses NaN and Infinity (not JSON, never a valid amount) and reads UTF-8 only; a body
# it refuses is read again by the standard library, which also takes UTF-16 and UTF-32 and
# words the error a caller shows.
_DECODER = msgspec.json.Decoder(float_hook=Decimal)
_ENCODER = msgspec.json.Encoder(decimal_format="number")
_STDLIB_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


def decode_json(text: str | bytes) -> Any:
    """Decode a JSON body; every non-integer number becomes an exact `Decimal`."""
    try:
        return _DECODER.decode(text)
    except msgspec.DecodeError:
        pass
    if isinstance(text, bytes | bytearray):
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    elif text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _STDLIB_DECODER.decode(text)


def decode_typed(text: bytes, decoder: msgspec.json.Decoder[Any]) -> Any:
    """Decode a JSON body into the decoder's type, reading only the fields it names.

    A body that is not the type raises `msgspec.ValidationError`, whose message names the
    field (e.g. "Object missing required field `id`"); a body msgspec cannot read at all
    (not UTF-8) is read by `decode_json` and then converted, with the same errors."""
    try:
        return decoder.decode(text)
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError:
        pass
    return msgspec.convert(decode_json(text), decoder.type, strict=False)


# Leaf types that are never a float, by exact type: the common case costs one set lookup.
_NOT_FLOAT = frozenset({str, int, bool, Decimal, type(None)})


def encode_json(body: Any) -> bytes:
    """Encode a request body; `Decimal` values go out as exact JSON numbers, never via float."""
    if _contains_float(body):
        raise TypeError("request bodies carry money: use Decimal or int, never float")
    return _ENCODER.encode(body)


def _contains_float(value: Any) -> bool:
    """Whether a float hides anywhere in the values of nested mappings, lists and tuples.

    One call per container, not per value: leaves are skipped by exact type."""
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    elif isinstance(value, float):
        return True
    elif isinstance(value, Mapping):
        items = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return False
    not_float = _NOT_FLOAT
    for item in items:  # noqa: SIM110 - a loop: `any` over a generator costs twice as much
        if type(item) not in not_float and _contains_float(item):
            return True
    return False
