"""Currency arithmetic of the sandbox: ISO 4217 exponents and half-up rounding with Decimal.

The exponent table comes from `mappings.money`; the rounding is the sandbox's own, so a
rounding bug in the connector cannot hide behind the same bug in its fake counterpart.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from mappings.money import MoneyError, exponent_for_code

__all__ = [
    "MoneyError",
    "base_unit_for",
    "currency_symbol",
    "exponent_for",
    "format_with_currency",
    "minor_to_major",
    "parse_decimal",
    "quantize_major",
    "round_minor",
]

_SYMBOLS = {
    "USD": "$",
    "CAD": "$",
    "AUD": "$",
    "NZD": "$",
    "EUR": "€",
    "GBP": "£",
    "JPY": "¥",
    "KRW": "₩",
    "KWD": "KD",
    "BHD": "BD",
    "CHF": "CHF",
    "INR": "₹",
}


def exponent_for(code: str) -> int:
    """Decimals of an ISO 4217 currency (2 for USD, 0 for JPY, 3 for KWD); MoneyError if unknown."""
    return exponent_for_code(code.upper())


def base_unit_for(code: str) -> int:
    """Minor units per major unit, as Kantata's `currency_base_unit` (100, 1, 1000)."""
    return int(10 ** exponent_for(code))


def currency_symbol(code: str) -> str:
    """A display symbol for the currency; the code itself when none is known."""
    return _SYMBOLS.get(code.upper(), code.upper())


def round_minor(value: Decimal) -> int:
    """Round a Decimal count of minor units to an integer, halves away from zero."""
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def quantize_major(value: Decimal, exponent: int) -> Decimal:
    """Round a major-unit Decimal half-up to exactly `exponent` decimals."""
    return value.quantize(Decimal(1).scaleb(-exponent), rounding=ROUND_HALF_UP)


def minor_to_major(minor: int, exponent: int) -> Decimal:
    """Integer minor units -> Decimal major units with exactly `exponent` decimals."""
    return Decimal(minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))


def parse_decimal(value: object) -> Decimal | None:
    """A JSON number (int or Decimal) or decimal string -> finite Decimal; None when invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal | int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return result if result.is_finite() else None


def format_with_currency(amount: Decimal, code: str) -> str:
    """`$1,234.50`-style text for the `*_with_currency` fields."""
    symbol = currency_symbol(code)
    sign = "-" if amount < 0 else ""
    return f"{sign}{symbol}{abs(amount):,}"
