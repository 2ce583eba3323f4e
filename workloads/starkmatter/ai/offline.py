"""The offline analyst: an answer derived from indicators and news sentiment, no model.

Used when no API key is configured, while the circuit is open, or when the model's answer
fails the checks. Every answer says plainly that it came from rules, not from a model.
"""

from __future__ import annotations

import decimal

from starkmatter.ai import contexting, models

LABEL = "Offline analyst (rule-based, no AI model)"

_D = decimal.Decimal


def _ind(data: contexting.SymbolData, name: str) -> decimal.Decimal | None:
    raw = data.indicators.get(name)
    if raw is None:
        return None
    try:
        return _D(raw)
    except decimal.InvalidOperation:
        return None


def technical_signals(data: contexting.SymbolData) -> tuple[int, list[str]]:
    """A score (positive = bullish) and the reasons for it, from the latest indicators."""
    score = 0
    reasons: list[str] = []
    close = data.bars[-1].close if data.bars else None
    rsi = _ind(data, "rsi_14")
    if rsi is not None:
        if rsi >= 70:
            score -= 1
            reasons.append(f"{data.symbol} RSI(14) {rsi:.1f} is overbought")
        elif rsi <= 30:
            score += 1
            reasons.append(f"{data.symbol} RSI(14) {rsi:.1f} is oversold")
        else:
            reasons.append(f"{data.symbol} RSI(14) {rsi:.1f} is neutral")
    hist = _ind(data, "macd_histogram")
    if hist is not None and hist != 0:
        score += 1 if hist > 0 else -1
        direction = "positive (bullish momentum)" if hist > 0 else "negative (bearish momentum)"
        reasons.append(f"{data.symbol} MACD histogram is {direction}")
    sma = _ind(data, "sma_20")
    if sma is not None and close is not None:
        above = close > sma
        score += 1 if above else -1
        where = "above" if above else "below"
        reasons.append(f"{data.symbol} price {close} is {where} its 20-bar moving average {sma}")
    upper, lower = _ind(data, "bb_upper"), _ind(data, "bb_lower")
    if close is not None and upper is not None and lower is not None:
        if close > upper:
            reasons.append(f"{data.symbol} trades above its upper Bollinger band (stretched)")
        elif close < lower:
            reasons.append(f"{data.symbol} trades below its lower Bollinger band (stretched)")
    return score, reasons


def news_sentiment(news: tuple[contexting.NewsItem, ...] | None, symbol: str) -> _D | None:
    if not news:
        return None
    scores = [n.sentiment for n in news if symbol in n.symbols]
    if not scores:
        return None
    return (sum(scores, _D(0)) / len(scores)).quantize(_D("0.01"))


def _portfolio_points(positions: tuple[contexting.Position, ...]) -> list[str]:
    values = {
        p.symbol: abs(p.quantity * (p.mark_price if p.mark_price is not None else p.avg_cost))
        for p in positions
        if p.quantity != 0
    }
    total = sum(values.values(), _D(0))
    if total == 0:
        return ["no open positions: portfolio risk is limited to cash"]
    top, top_value = max(values.items(), key=lambda kv: kv[1])
    weight = (top_value / total * 100).quantize(_D("0.1"))
    points = [f"{len(values)} open positions worth {total.quantize(_D('0.01'))} in all"]
    points.append(
        f"largest position {top} is {weight}% of invested value"
        + (" — a concentration risk" if weight > 40 else "")
    )
    losing = [
        p.symbol
        for p in positions
        if p.mark_price is not None and p.quantity > 0 and p.mark_price < p.avg_cost
    ]
    if losing:
        points.append("positions below cost: " + ", ".join(sorted(losing)))
    return points


def analyse(context: contexting.Context, request: models.NormalizedRequest) -> models.Analysis:
    points: list[str] = []
    risks: list[str] = []
    total = 0
    signals = 0
    for data in context.symbols:
        score, reasons = technical_signals(data)
        total += score
        signals += len(reasons)
        points.extend(reasons)
        sentiment = news_sentiment(context.news, data.symbol)
        if sentiment is not None:
            signals += 1
            if sentiment > _D("0.15"):
                total += 1
            elif sentiment < _D("-0.15"):
                total -= 1
            points.append(f"{data.symbol} news sentiment averages {sentiment} (-1..1)")
        if not data.bars:
            risks.append(f"no stored price history for {data.symbol}: signals are incomplete")
    if request.kind == "portfolio_risk":
        if context.positions is None:
            risks.append("positions are unavailable, so portfolio risk cannot be assessed")
        else:
            points = _portfolio_points(context.positions) + points
    if context.news:
        headline = context.news[0]
        points.append(f"latest headline: {headline.title[:200]}")
    if not points:
        points.append("no indicators or news are stored for these symbols yet")
    outlook: models.Outlook = "bullish" if total >= 2 else "bearish" if total <= -2 else "neutral"
    confidence = min(0.6, 0.15 + 0.05 * signals) if signals else 0.1
    names = ", ".join(request.symbols)
    summary = (
        f"{LABEL}: {outlook} {request.kind.replace('_', ' ')} view on {names} over"
        f" {request.horizon}, from {signals} indicator and news signals (net score {total})."
        " Treat it as a mechanical summary, not advice."
    )
    risks.append("rule-based signals ignore fundamentals and events not in the stored data")
    return models.Analysis(
        summary=summary,
        outlook=outlook,
        confidence=round(confidence, 2),
        symbols=list(request.symbols),
        key_points=points[:8],
        risks=risks[:8],
    )
