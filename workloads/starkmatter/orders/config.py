"""The order service's own frozen settings, read from ``STARKMATTER_ORDERS_*`` variables."""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from decimal import Decimal
from typing import Literal

import pydantic
import pydantic_settings

from starkmatter.orders import fills, grouping, risk


class OrdersConfig(pydantic_settings.BaseSettings):
    model_config = pydantic_settings.SettingsConfigDict(
        env_prefix="STARKMATTER_ORDERS_", extra="ignore", frozen=True
    )

    broker: Literal["paper", "alpaca"] = "paper"
    # risk limits (units in risk.RiskLimits)
    max_order_quantity: Decimal = Decimal(100_000)
    max_order_notional: Decimal = Decimal(1_000_000)
    price_collar: Decimal = Decimal("0.10")
    market_protection: Decimal = Decimal("0.02")
    max_position_notional: Decimal = Decimal(2_000_000)
    max_gross_exposure: Decimal = Decimal(5_000_000)
    max_open_orders: int = 500
    max_orders_per_second: int = 50
    default_tick_size: Decimal = Decimal("0.01")
    max_quote_age_s: float = 86_400.0
    # paper broker
    slippage_bps: Decimal = Decimal(0)
    """adverse move applied to each paper fill, basis points, never past the order's cap"""
    latency_ms: int = pydantic.Field(default=0, ge=0)
    """delay between an order reaching the paper broker and its first fill attempt"""
    session_close: dt.time = dt.time(16, 0)
    """local wall-clock time of the trading session's close, when day orders expire"""
    session_timezone: str = "America/New_York"
    """IANA time zone of ``session_close``; daylight saving follows the zone's rules"""
    # placement (API)
    placement_in_flight: int = pydantic.Field(default=4, ge=1)
    """placement statements one API process runs at once; orders arriving meanwhile are
    grouped into the next one (one transaction and one commit for the group)"""
    placement_group_max: int = pydantic.Field(default=64, ge=1)
    """orders in one placement group"""
    # worker
    batch_size: int = pydantic.Field(default=200, ge=1)
    """outbox events handled per transaction"""
    poll_interval_ms: int = pydantic.Field(default=200, ge=1)
    """working orders are re-matched against the market (and expired) this often"""
    outbox_poll_ms: int = pydantic.Field(default=5, ge=1)
    """how often an idle worker looks for new outbox events"""
    outbox_gather_ms: int = pydantic.Field(default=25, ge=0)
    """after a batch smaller than ``batch_size``, wait this long for more events before
    the next one: fewer, larger batches (less CPU per order) for that much fill latency"""
    max_attempts: int = pydantic.Field(default=10, ge=1)
    """an outbox event that failed this often is parked (kept, no longer retried)"""
    # alpaca
    alpaca_base_url: str = "https://paper-api.alpaca.markets"
    alpaca_key_id: pydantic.SecretStr | None = None
    alpaca_secret_key: pydantic.SecretStr | None = None
    # testing
    failpoint: str | None = None
    """name of a step after which the worker process exits at once (crash tests only)"""

    @pydantic.field_validator("session_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (want an IANA name)") from exc
        return value

    @pydantic.field_validator("session_close")
    @classmethod
    def _naive_close(cls, value: dt.time) -> dt.time:
        if value.tzinfo is not None:
            raise ValueError("session_close is a wall-clock time; give its zone separately")
        return value

    def session_zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.session_timezone)

    def limits(self) -> risk.RiskLimits:
        return risk.RiskLimits(
            max_order_quantity=self.max_order_quantity,
            max_order_notional=self.max_order_notional,
            price_collar=self.price_collar,
            market_protection=self.market_protection,
            max_position_notional=self.max_position_notional,
            max_gross_exposure=self.max_gross_exposure,
            max_open_orders=self.max_open_orders,
            max_orders_per_second=self.max_orders_per_second,
            default_tick_size=self.default_tick_size,
            max_quote_age=dt.timedelta(seconds=self.max_quote_age_s),
        )

    def grouping(self) -> grouping.GroupConfig:
        return grouping.GroupConfig(self.placement_in_flight, self.placement_group_max)

    def fill_model(self) -> fills.FillModel:
        return fills.FillModel(slippage_bps=self.slippage_bps)


@functools.cache
def get_config() -> OrdersConfig:
    return OrdersConfig()


def day_expiry(created: dt.datetime, close: dt.time, zone: dt.tzinfo) -> dt.datetime:
    """The first session close after ``created``, in UTC: when a day order stops working.

    ``close`` is wall-clock time in ``zone`` (16:00 New York is 21:00 UTC in winter and
    20:00 UTC in summer). Weekends and holidays are not modelled: an order placed after
    Friday's close expires at Saturday's.
    """
    if created.tzinfo is None:
        raise ValueError("created must be timezone-aware")
    local = created.astimezone(zone)
    day = local.date()
    while True:
        # zoneinfo resolves a wall time that falls in a DST gap or fold deterministically
        # (fold=0: the first occurrence); a 16:00 close never does in any real market zone.
        candidate = dt.datetime.combine(day, close, tzinfo=zone).astimezone(dt.UTC)
        if candidate > created:
            return candidate
        day += dt.timedelta(days=1)
