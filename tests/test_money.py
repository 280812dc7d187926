"""Money arithmetic: currency exponents, half-up rounding, minor/major conversions (money.md)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mappings.money import (
    MAX_ABS_MINOR,
    MoneyError,
    exponent_for_base_unit,
    exponent_for_code,
    format_money,
    round_half_up,
    tax_amount,
    time_amount,
    to_major,
    to_minor,
)

FAST = settings(max_examples=200, deadline=None)
minor_amounts = st.integers(min_value=-MAX_ABS_MINOR, max_value=MAX_ABS_MINOR)
exponents = st.integers(min_value=0, max_value=4)


def _half_up_ratio(numerator: int, denominator: int) -> int:
    """Integer-only oracle: numerator / denominator rounded half away from zero."""
    sign = -1 if (numerator < 0) != (denominator < 0) else 1
    n, d = abs(numerator), abs(denominator)
    return sign * ((2 * n + d) // (2 * d))


@pytest.mark.parametrize(
    ("code", "exponent"),
    [("USD", 2), ("EUR", 2), ("GBP", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3), ("BHD", 3)],
)
def test_exponent_for_code_knows_iso_minor_units(code: str, exponent: int) -> None:
    """ISO 4217 codes map to their number of decimals, not an assumed 2."""
    assert exponent_for_code(code) == exponent


def test_exponent_for_code_refuses_unknown_codes() -> None:
    """An unknown currency code is a MoneyError naming the code."""
    with pytest.raises(MoneyError, match="XXX"):
        exponent_for_code("XXX")


@pytest.mark.parametrize(("base_unit", "exponent"), [(1, 0), (10, 1), (100, 2), (1000, 3)])
def test_exponent_for_base_unit_reads_powers_of_ten(base_unit: int, exponent: int) -> None:
    """currency_base_unit 10**n means n decimals."""
    assert exponent_for_base_unit(base_unit) == exponent


@pytest.mark.parametrize("base_unit", [0, -100, 250, 12, 99])
def test_exponent_for_base_unit_refuses_non_powers_of_ten(base_unit: int) -> None:
    """A base unit that is not a positive power of ten is a MoneyError."""
    with pytest.raises(MoneyError, match=str(base_unit)):
        exponent_for_base_unit(base_unit)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0.5", 1), ("-0.5", -1), ("1.49", 1), ("2.5", 3), ("-2.5", -3), ("-1.51", -2), ("0", 0)],
)
def test_round_half_up_rounds_halves_away_from_zero(value: str, expected: int) -> None:
    """Halves go away from zero, everything else to the nearest integer."""
    assert round_half_up(Decimal(value)) == expected


@FAST
@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from([2, 3, 60, 100, 1000]))
def test_round_half_up_matches_integer_oracle(numerator: int, denominator: int) -> None:
    """Decimal half-up rounding of a ratio equals exact integer arithmetic."""
    got = round_half_up(Decimal(numerator) / Decimal(denominator))
    assert got == _half_up_ratio(numerator, denominator)


def test_to_major_carries_exactly_the_currency_decimals() -> None:
    """Minor units become Decimal major units with exactly `exponent` decimals."""
    assert str(to_major(12345, 2)) == "123.45"
    assert str(to_major(100, 2)) == "1.00"
    assert str(to_major(5, 0)) == "5"
    assert str(to_major(-1, 3)) == "-0.001"
    assert str(to_major(0, 3)) == "0.000"


def test_to_minor_accepts_exact_amounts() -> None:
    """Whole minor units in Decimal, str or int convert exactly."""
    assert to_minor(Decimal("12.30"), 2) == 1230
    assert to_minor("1479.5", 2) == 147950
    assert to_minor(7, 0) == 7
    assert to_minor("-0.125", 3) == -125


@pytest.mark.parametrize(("major", "exponent"), [("1.005", 2), ("0.5", 0), ("abc", 2), ("NaN", 2)])
def test_to_minor_refuses_fractions_of_a_minor_unit(major: str, exponent: int) -> None:
    """An amount that is not a whole number of minor units is a MoneyError, never rounded."""
    with pytest.raises(MoneyError):
        to_minor(major, exponent)


@FAST
@given(minor_amounts, exponents)
def test_to_minor_inverts_to_major(minor: int, exponent: int) -> None:
    """to_minor(to_major(x, e), e) == x and to_major has exactly e decimals."""
    major = to_major(minor, exponent)
    assert major.as_tuple().exponent == -exponent
    assert to_minor(major, exponent) == minor
    assert to_minor(str(major), exponent) == minor


def test_tax_amount_rounds_half_up_at_the_minor_unit() -> None:
    """Tax is round_half_up(taxable * rate / 100), credits rounding away from zero."""
    assert tax_amount(1000, Decimal("8.875")) == 89  # 88.75
    assert tax_amount(-1000, Decimal("8.875")) == -89
    assert tax_amount(134500, Decimal("10.0")) == 13450
    assert tax_amount(10, Decimal("5")) == 1  # 0.5
    assert tax_amount(0, Decimal("20")) == 0


@st.composite
def tax_rates(draw: st.DrawFn) -> tuple[int, int]:
    """(units, decimals) of a percentage between 0 and 100 with 0-3 decimals."""
    decimals = draw(st.integers(0, 3))
    return draw(st.integers(0, 100 * 10**decimals)), decimals


@FAST
@given(minor_amounts, tax_rates())
def test_tax_amount_matches_integer_oracle(taxable: int, rate: tuple[int, int]) -> None:
    """Tax at a rate with 0-3 decimals equals the exact integer computation."""
    units, decimals = rate
    expected = _half_up_ratio(taxable * units, 100 * 10**decimals)
    assert tax_amount(taxable, Decimal(units).scaleb(-decimals)) == expected


def test_time_amount_prices_minutes_at_an_hourly_rate() -> None:
    """A time entry costs round_half_up(minutes * hourly rate / 60)."""
    assert time_amount(300, 2500) == 12500
    assert time_amount(90, 2500) == 3750
    assert time_amount(1, 50) == 1  # 0.833...
    assert time_amount(1, 30) == 1  # 0.5 exactly
    assert time_amount(1, -30) == -1
    assert time_amount(60, 0) == 0


@FAST
@given(st.integers(0, 10_000), st.integers(-(10**9), 10**9))
def test_time_amount_matches_integer_oracle(minutes: int, rate: int) -> None:
    """Time amounts equal the exact integer computation for any minutes and rate."""
    assert time_amount(minutes, rate) == _half_up_ratio(minutes * rate, 60)


def test_format_money_groups_thousands_with_the_currency_decimals() -> None:
    """Human amounts show thousands separators and the currency's decimals."""
    assert format_money(147950, 2, "USD") == "1,479.50 USD"
    assert format_money(1500, 0, "JPY") == "1,500 JPY"
    assert format_money(-1234, 3, "KWD") == "-1.234 KWD"
