"""``GET/POST/DELETE /alerts`` (the user's price alerts) and ``GET /alerts/events``."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import uuid
from typing import Annotated, Any, Literal

import fastapi
import pydantic

from starkmatter.alerts import evaluating, pricing
from starkmatter.api import deps
from starkmatter.core import audit, errors, schemas

router = fastapi.APIRouter(prefix="/alerts", tags=["alerts"])

MAX_ACTIVE_PER_USER = 100
INDICATORS = ("sma_20", "ema_20", "rsi_14", "macd", "macd_signal", "macd_histogram",
              "bb_lower", "bb_middle", "bb_upper")  # fmt: skip


class AlertCreate(schemas.RequestModel):
    symbol: Annotated[
        str, pydantic.Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9.\-]+$")
    ]
    condition: pricing.Condition
    threshold: Annotated[
        decimal.Decimal,
        pydantic.BeforeValidator(schemas.short_number),
        pydantic.Field(max_digits=24, decimal_places=8),
    ]
    """Price (price_above/below) or percent (pct_move), above zero; or an indicator value
    (indicator), which may be zero or negative (a MACD histogram crossing 0, say)."""
    indicator: Literal[INDICATORS] | None = None  # type: ignore[valid-type]
    comparison: Literal["above", "below"] | None = None
    note: Annotated[str, pydantic.Field(max_length=200), schemas.PrintableText] = ""

    @pydantic.model_validator(mode="after")
    def _indicator_fields(self) -> AlertCreate:
        if (self.condition == "indicator") != (self.indicator is not None):
            raise ValueError("indicator is required for, and only for, condition indicator")
        if self.condition == "indicator" and self.comparison is None:
            raise ValueError("comparison (above or below) is required for an indicator alert")
        if self.condition != "indicator" and self.threshold <= 0:
            raise ValueError(f"threshold must be above 0 for condition {self.condition}")
        return self


class AlertPublic(schemas.ResponseModel):
    id: str
    symbol: str
    condition: str
    threshold: str
    indicator: str | None
    comparison: str | None
    reference_price: str | None
    note: str
    active: bool
    triggered_at: dt.datetime | None
    created_at: dt.datetime


class AlertEventPublic(schemas.ResponseModel):
    id: int
    rule: str
    kind: str
    severity: str
    state: str
    summary: str
    details: dict[str, Any]
    created_at: dt.datetime


def _public(row: Any) -> AlertPublic:
    def text(value: Any) -> str | None:
        return None if value is None else str(value)

    return AlertPublic(
        id=str(row["id"]),
        symbol=row["symbol"],
        condition=row["condition"],
        threshold=str(row["threshold"]),
        indicator=row["indicator"],
        comparison=row["comparison"],
        reference_price=text(row["reference_price"]),
        note=row["note"],
        active=row["active"],
        triggered_at=row["triggered_at"],
        created_at=row["created_at"],
    )


_COLUMNS = """id, symbol, condition, threshold, indicator, comparison, reference_price, note,
              active, triggered_at, created_at"""


@router.get("")
async def list_alerts(user: deps.CurrentUser, pool: deps.DbDep) -> list[AlertPublic]:
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM alert_rules WHERE user_id = $1 ORDER BY created_at DESC",
        uuid.UUID(user.user_id),
    )
    return [_public(r) for r in rows]


@router.post("", status_code=201)
async def create_alert(
    body: AlertCreate,
    user: deps.TraderUser,
    pool: deps.DbDep,
    redis: deps.RedisDep,
    request: fastapi.Request,
) -> AlertPublic:
    symbol = body.symbol.upper()
    raw = await redis.get(f"quote:{symbol}")
    now = dt.datetime.now(dt.UTC)
    freshness = evaluating.Freshness()
    last = None
    with contextlib.suppress(ValueError):  # an unreadable quote is no quote
        last, ts = evaluating.parse_quote(raw) if raw else (None, None)
        if ts is not None and now - ts > freshness.quote_max_age:
            last = None  # a stale price is no reference for a move from now
    if body.condition == "pct_move" and last is None:
        raise errors.Conflict(
            f"no live quote for {symbol}: a percentage move needs a price to start from",
            code="no_quote",
        )
    rule = pricing.PriceRule(
        "new", user.user_id, symbol, body.condition, body.threshold, body.indicator,
        body.comparison, last if body.condition == "pct_move" else None,
    )  # fmt: skip
    indicators = await evaluating.latest_indicators(
        pool, [symbol], since=now - freshness.bar_max_age
    )
    # Crossing semantics: a condition already true at creation fires only after it clears.
    held = pricing.holds(rule, last, indicators.get(symbol, {})) or False
    actor = audit.Actor(user.user_id, "api", deps.endpoint_of(request))
    async with pool.acquire() as conn, conn.transaction():
        active = await conn.fetchval(
            "SELECT count(*) FROM alert_rules WHERE user_id = $1 AND active",
            uuid.UUID(user.user_id),
        )
        if active >= MAX_ACTIVE_PER_USER:
            raise errors.Conflict(
                f"at most {MAX_ACTIVE_PER_USER} active alerts per user", code="too_many_alerts"
            )
        row = await conn.fetchrow(
            f"""INSERT INTO alert_rules (id, user_id, symbol, condition, threshold, indicator,
                       comparison, reference_price, note, condition_held)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {_COLUMNS}""",
            uuid.uuid4(),
            uuid.UUID(user.user_id),
            symbol,
            body.condition,
            body.threshold,
            body.indicator,
            body.comparison,
            rule.reference_price,
            body.note,
            held,
        )
        assert row is not None
        created = _public(row)
        await audit.record(
            conn, actor, action="alert.created", reason="user created a price alert",
            entity_type="alert_rule", entity_id=created.id,
            after=created.model_dump(mode="json"),
        )  # fmt: skip
    return created


@router.delete("/{alert_id}", status_code=204)
async def delete_alert(
    alert_id: uuid.UUID, user: deps.CurrentUser, pool: deps.DbDep, request: fastapi.Request
) -> fastapi.Response:
    actor = audit.Actor(user.user_id, "api", deps.endpoint_of(request))
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"DELETE FROM alert_rules WHERE id = $1 AND user_id = $2 RETURNING {_COLUMNS}",
            alert_id,
            uuid.UUID(user.user_id),
        )
        if row is None:
            raise errors.NotFound("no such alert", code="alert_not_found")
        await audit.record(
            conn, actor, action="alert.deleted", reason="user deleted a price alert",
            entity_type="alert_rule", entity_id=str(alert_id),
            before=_public(row).model_dump(mode="json"),
        )  # fmt: skip
    return fastapi.Response(status_code=204)


@router.get("/events")
async def list_events(
    user: deps.CurrentUser,
    pool: deps.DbDep,
    limit: Annotated[int, pydantic.Field(ge=1, le=200)] = 50,
) -> list[AlertEventPublic]:
    rows = await pool.fetch(
        """SELECT id, rule, kind, severity, state, summary, details, created_at
           FROM alert_events WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2""",
        uuid.UUID(user.user_id),
        limit,
    )
    return [AlertEventPublic(**dict(r)) for r in rows]
