"""Day orders expire at the session close, a wall-clock time in the market's time zone."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pydantic
import pytest

from starkmatter.orders.config import OrdersConfig, day_expiry

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
CLOSE = dt.time(16, 0)


def utc(year: int, month: int, day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


def test_day_order_expires_at_four_pm_new_york_which_is_21_utc_in_winter() -> None:
    assert day_expiry(utc(2026, 1, 15, 14, 30), CLOSE, NEW_YORK) == utc(2026, 1, 15, 21, 0)


def test_day_order_expires_at_four_pm_new_york_which_is_20_utc_in_summer() -> None:
    assert day_expiry(utc(2026, 7, 15, 14, 30), CLOSE, NEW_YORK) == utc(2026, 7, 15, 20, 0)


def test_order_placed_after_the_close_expires_at_the_next_days_close() -> None:
    # 20:30 UTC on 15 July is 16:30 in New York: today's close has passed.
    assert day_expiry(utc(2026, 7, 15, 20, 30), CLOSE, NEW_YORK) == utc(2026, 7, 16, 20, 0)


def test_order_placed_exactly_at_the_close_expires_at_the_next_close() -> None:
    assert day_expiry(utc(2026, 1, 15, 21, 0), CLOSE, NEW_YORK) == utc(2026, 1, 16, 21, 0)


def test_close_follows_the_daylight_saving_switch() -> None:
    # DST began on Sunday 8 March 2026: Friday's close is 21:00 UTC, Monday's 20:00 UTC.
    assert day_expiry(utc(2026, 3, 6, 22, 0), CLOSE, NEW_YORK) == utc(2026, 3, 7, 21, 0)
    assert day_expiry(utc(2026, 3, 9, 13, 0), CLOSE, NEW_YORK) == utc(2026, 3, 9, 20, 0)


def test_late_evening_utc_is_still_the_same_new_york_day_before_midnight_local() -> None:
    # 02:00 UTC on 16 Jan is 21:00 on 15 Jan in New York: the next close is 16 Jan 21:00 UTC.
    assert day_expiry(utc(2026, 1, 16, 2, 0), CLOSE, NEW_YORK) == utc(2026, 1, 16, 21, 0)


def test_other_markets_close_in_their_own_zone() -> None:
    tokyo = zoneinfo.ZoneInfo("Asia/Tokyo")
    assert day_expiry(utc(2026, 1, 15, 1, 0), dt.time(15, 0), tokyo) == utc(2026, 1, 15, 6, 0)


def test_expiry_refuses_a_naive_timestamp() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        day_expiry(dt.datetime(2026, 1, 15, 14, 30), CLOSE, NEW_YORK)  # noqa: DTZ001


def test_default_session_is_new_york_at_four_pm() -> None:
    config = OrdersConfig()
    assert (config.session_close, config.session_timezone) == (CLOSE, "America/New_York")
    assert config.session_zone() == NEW_YORK


def test_session_timezone_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARKMATTER_ORDERS_SESSION_TIMEZONE", "Europe/London")
    monkeypatch.setenv("STARKMATTER_ORDERS_SESSION_CLOSE", "16:30")
    config = OrdersConfig()
    assert config.session_zone() == zoneinfo.ZoneInfo("Europe/London")
    assert config.session_close == dt.time(16, 30)


def test_unknown_time_zone_is_refused_with_a_clear_error() -> None:
    with pytest.raises(pydantic.ValidationError, match="unknown time zone 'Mars/Olympus'"):
        OrdersConfig(session_timezone="Mars/Olympus")


def test_session_close_with_its_own_offset_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="wall-clock time"):
        OrdersConfig(session_close=dt.time(16, 0, tzinfo=dt.UTC))
