import datetime
import decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from starkmatter.market import models, storing


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("101.25", 10_125_000_000),
        ("-0.5", -50_000_000),
        (".5", 50_000_000),
        (7, 700_000_000),
        (0.1, 10_000_000),
        ("1e2", 10_000_000_000),
        (decimal.Decimal("3.000000005"), 300_000_000),
        ("0.123456785", 12_345_678),
    ],
)
def test_vendor_numbers_become_exact_fixed_point(raw: object, expected: int) -> None:
    assert models.to_fixed(raw) == expected


@pytest.mark.parametrize("raw", ["", "abc", "1.2.3", "NaN", "inf", "1_000", True, None, "٣"])
def test_non_numbers_are_refused(raw: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        models.to_fixed(raw)


@pytest.mark.parametrize("raw", ["-", "+", "-.", "--1", "1-2", "+-3"])
def test_a_bare_sign_is_not_zero(raw: str) -> None:
    with pytest.raises(ValueError, match="not a number"):
        models.to_fixed(raw)


@pytest.mark.parametrize(
    "raw",
    ["1e30", 1e30, "1e16", "10000000000000000", -(10**16), decimal.Decimal("-1E+40"), "1" * 60],
)
def test_numbers_storage_cannot_hold_are_refused_as_out_of_range(raw: object) -> None:
    # 1e30 once escaped as decimal.InvalidOperation (rounding it to 8 places needs more
    # than the default context's 28 digits), which is not a ValueError: it stopped the feed.
    with pytest.raises(ValueError, match="out of range"):
        models.to_fixed(raw)


def test_the_largest_storable_number_is_read_exactly() -> None:
    assert models.to_fixed("9999999999999999.99999999") == models.LIMIT - 1
    with pytest.raises(ValueError, match="out of range"):
        models.to_fixed("9999999999999999.999999999")  # rounds up to 10^16


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=8, allow_nan=False))
def test_fixed_point_round_trips_through_decimal_and_text(value: decimal.Decimal) -> None:
    fixed = models.to_fixed(str(value))
    assert models.to_decimal(fixed) == value
    assert decimal.Decimal(models.to_text(fixed)) == value


def _decode_numeric(encoded: bytes) -> decimal.Decimal:
    import struct

    length = struct.unpack("!i", encoded[:4])[0]
    ndigits, weight, sign, _dscale = struct.unpack("!hhHH", encoded[4:12])
    digits = struct.unpack(f"!{ndigits}H", encoded[12 : 12 + 2 * ndigits])
    assert length == 8 + 2 * ndigits
    value = sum(
        decimal.Decimal(d) * decimal.Decimal(10_000) ** (weight - i) for i, d in enumerate(digits)
    )
    result: decimal.Decimal = -value if sign == 0x4000 else value
    return result


@given(st.integers(min_value=-(10**18), max_value=10**18))
def test_binary_numeric_encoding_is_the_exact_value(fixed: int) -> None:
    assert _decode_numeric(storing.encode_numeric(fixed)) == models.to_decimal(fixed)


def test_datetime_conversions_are_utc_and_exact_to_the_microsecond() -> None:
    ts = 1_764_072_000_123_456_000
    moment = models.to_datetime(ts)
    assert moment.utcoffset() == datetime.timedelta(0)
    assert models.from_datetime(moment) == ts
    assert models.iso(ts) == "2025-11-25T12:00:00.123456Z"
