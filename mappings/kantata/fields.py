"""Field readers: one record's typed fields, lenient about ids, strict about money, each
failure a `MappingError` naming the invoice and the field; the source fingerprint."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from mappings.canonical import canonical_json
from mappings.errors import MappingError
from mappings.money import (
    MAX_ABS_MINOR,
)


class _Reader:
    """Reads typed fields of one record, raising `MappingError` that names invoice and field."""

    def __init__(self, invoice_id: str, record: Mapping[str, Any], prefix: str) -> None:
        self.invoice_id = invoice_id
        self.record = record
        self.prefix = prefix

    def fail(self, field: str, message: str) -> MappingError:
        return MappingError(self.invoice_id, f"{self.prefix}{field}", message)

    def raw(self, field: str) -> Any:
        return self.record.get(field)

    def text(self, field: str, *, required: bool = False) -> str:
        value = self.record.get(field)
        if value is None:
            if required:
                raise self.fail(field, "is missing")
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            return str(value)
        raise self.fail(field, f"expected text, got {type(value).__name__}")

    def ident(self, field: str, *, required: bool = False) -> str | None:
        value = self.record.get(field)
        if value is None or value == "":
            if required:
                raise self.fail(field, "is missing")
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.fail(field, f"expected an id, got {type(value).__name__}")
        return str(value)

    def flag(self, field: str, *, default: bool = False) -> bool:
        value = self.record.get(field)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if value in ("true", "1", 1):
            return True
        if value in ("false", "0", 0):
            return False
        raise self.fail(field, f"expected true or false, got {value!r}")

    def integer(
        self, field: str, *, required: bool = False, minimum: int | None = None
    ) -> int | None:
        value = self.record.get(field)
        if value is None or value == "":
            if required:
                raise self.fail(field, "is missing")
            return None
        number = _as_integer(value)
        if number is None:
            raise self.fail(field, f"expected a whole number, got {value!r}")
        if minimum is not None and number < minimum:
            raise self.fail(field, f"must be at least {minimum}, got {number}")
        return number

    def amount(self, field: str) -> int:
        """A money amount in minor units: required, whole, within ±10^13."""
        value = self.record.get(field)
        if value is None or value == "":
            raise self.fail(field, "is missing")
        number = _as_integer(value)
        if number is None:
            raise self.fail(field, f"must be a whole number of minor units, got {value!r}")
        if abs(number) > MAX_ABS_MINOR:
            raise self.fail(field, f"{number} exceeds the limit of ±10^13 minor units")
        return number

    def day(self, field: str) -> date | None:
        value = self.record.get(field)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.fail(field, f"expected a date, got {value!r}")
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            raise self.fail(field, f"not an ISO 8601 date: {value!r}") from None

    def moment(self, field: str, *, required: bool = False) -> datetime | None:
        value = self.record.get(field)
        if value is None or value == "":
            if required:
                raise self.fail(field, "is missing")
            return None
        if not isinstance(value, str):
            raise self.fail(field, f"expected a timestamp, got {value!r}")
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise self.fail(field, f"not an ISO 8601 timestamp: {value!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def ids(self, field: str) -> list[str] | None:
        value = self.record.get(field)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail(field, f"expected a list of ids, got {type(value).__name__}")
        out: list[str] = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, str | int) or item == "":
                raise self.fail(field, f"holds a value that is not an id: {item!r}")
            out.append(str(item))
        return out


_INTEGER_TEXT = re.compile(r"-?[0-9]+")


def _as_integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() else None
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER_TEXT.fullmatch(text):
            try:
                return int(text)
            except ValueError:  # beyond the interpreter's digit limit
                return None
    return None


def _tax_rate(reader: _Reader) -> Decimal:
    value = reader.raw("tax_rate")
    if value is None or value == "":
        return Decimal(0)
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise reader.fail("tax_rate", f"expected a percentage, got {value!r}")
    try:
        rate = Decimal(str(value))
    except InvalidOperation:
        raise reader.fail("tax_rate", f"expected a percentage, got {value!r}") from None
    if not rate.is_finite() or rate < 0 or rate > 100:
        raise reader.fail("tax_rate", f"must be between 0 and 100, got {value!r}")
    return rate.normalize() if rate != 0 else Decimal(0)


def _fingerprint(invoice_id: str, record: Mapping[str, Any], lines: Mapping[str, Any]) -> str:
    volatile = {"updated_at", "external_reference_ids"}
    payload = {
        "id": invoice_id,
        "invoice": {k: v for k, v in record.items() if k not in volatile},
        "lines": lines,
    }
    return hashlib.sha256(canonical_json(payload, str)).hexdigest()


def _map(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body.get(key)
    return value if isinstance(value, Mapping) else {}
