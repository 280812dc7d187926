"""Money arithmetic shared by every part: minor units, currency exponents, half-up rounding.

Amounts are integers of the currency's minor unit, or `Decimal` in major units at the edges
where an API wants them. Nothing here ever touches a float.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# ISO 4217 minor-unit exponents of active currencies. Everything not listed under 0, 3 or 4
# has two decimals; the set of known codes decides what "unknown currency" means.
_EXPONENT_0 = frozenset(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()
)
_EXPONENT_3 = frozenset("BHD IQD JOD KWD LYD OMR TND".split())
_EXPONENT_4 = frozenset("CLF UYW".split())
_EXPONENT_2 = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP
    BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR
    FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW
    KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN
    NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD
    SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU
    UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL
    """.split()
)

MAX_ABS_MINOR = 10**13
"""Largest magnitude accepted for any single amount or total, in minor units."""


class MoneyError(ValueError):
    """An amount or currency that cannot be represented exactly."""


def exponent_for_code(code: str) -> int:
    """Number of decimals of an ISO 4217 currency; `MoneyError` for an unknown code."""
    if code in _EXPONENT_2:
        return 2
    if code in _EXPONENT_0:
        return 0
    if code in _EXPONENT_3:
        return 3
    if code in _EXPONENT_4:
        return 4
    raise MoneyError(f"unknown currency {code!r}")


def exponent_for_base_unit(base_unit: int) -> int:
    """10**n minor units per major unit -> n; `MoneyError` if it is not a power of ten."""
    if base_unit < 1:
        raise MoneyError(f"currency_base_unit must be a positive power of ten, got {base_unit}")
    exponent = 0
    value = base_unit
    while value % 10 == 0:
        value //= 10
        exponent += 1
    if value != 1:
        raise MoneyError(f"currency_base_unit must be a power of ten, got {base_unit}")
    return exponent


def round_half_up(value: Decimal) -> int:
    """Round to the nearest integer, halves away from zero."""
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def to_major(minor: int, exponent: int) -> Decimal:
    """Integer minor units -> Decimal major units carrying exactly `exponent` decimals."""
    return Decimal(minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))


def to_minor(major: Decimal | int | str, exponent: int) -> int:
    """Decimal major units -> integer minor units; `MoneyError` if it is not a whole minor unit."""
    try:
        value = Decimal(major) if not isinstance(major, Decimal) else major
        scaled = value.scaleb(exponent)
    except (InvalidOperation, ValueError, TypeError) as exc:
        raise MoneyError(f"not a decimal amount: {major!r}") from exc
    if not scaled.is_finite() or scaled != scaled.to_integral_value():
        raise MoneyError(f"{major} is not a whole number of minor units (exponent {exponent})")
    return int(scaled)


def tax_amount(taxable_minor: int, rate_percent: Decimal) -> int:
    """`round_half_up(taxable * rate / 100)` in minor units (money.md)."""
    return round_half_up(Decimal(taxable_minor) * rate_percent / Decimal(100))


def time_amount(minutes: int, rate_minor_per_hour: int) -> int:
    """`round_half_up(minutes * rate / 60)` in minor units (money.md)."""
    return round_half_up(Decimal(minutes) * Decimal(rate_minor_per_hour) / Decimal(60))


def format_money(minor: int, exponent: int, currency: str) -> str:
    """Human form for reports and messages, e.g. `1,479.50 USD`."""
    return f"{to_major(minor, exponent):,} {currency}"
