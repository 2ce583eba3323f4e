from __future__ import annotations

import datetime as dt
import decimal

from starkmatter.ai import contexting, models, offline

D = decimal.Decimal
T0 = dt.datetime(2026, 11, 25, 14, 0, tzinfo=dt.UTC)


def _request(
    kind: models.Kind = "technical", symbols: tuple[str, ...] = ("AAPL",)
) -> models.NormalizedRequest:
    return models.NormalizedRequest(
        symbols=symbols, kind=kind, question=None, horizon="1w", user_scope=None
    )


def _bars(n: int, start: str = "100") -> tuple[contexting.Bar, ...]:
    return tuple(
        contexting.Bar(T0 + dt.timedelta(minutes=i), D(start) + i, D(start) + i + 1,
                       D(start) + i - 1, D(start) + i, D(1000))
        for i in range(n)
    )  # fmt: skip


def _news(n: int, sentiment: str = "0.5") -> tuple[contexting.NewsItem, ...]:
    return tuple(
        contexting.NewsItem(i, T0 - dt.timedelta(hours=i), f"headline {i}", "summary " * 20,
                            D(sentiment), "other", ("AAPL",))
        for i in range(n)
    )  # fmt: skip


def _context(**kw: object) -> contexting.Context:
    defaults: dict[str, object] = {
        "symbols": (contexting.SymbolData("AAPL", _bars(60), {"rsi_14": "55"}),),
        "positions": (),
        "news": _news(10),
    }
    defaults.update(kw)
    return contexting.Context(**defaults)  # type: ignore[arg-type]


def test_packed_context_stays_within_the_token_budget() -> None:
    for budget in (200, 500, 1000, 5000):
        packed = contexting.pack(_context(), _request(), budget)
        assert packed.tokens <= budget


def test_tight_budget_keeps_the_newest_bars_and_reports_what_was_left_out() -> None:
    packed = contexting.pack(_context(), _request(), 300)
    assert "c=159" in packed.text  # the newest bar
    assert "c=100 " not in packed.text  # the oldest did not fit
    assert packed.omitted["bars"] > 0 and packed.omitted["news"] == 10


def test_news_analysis_puts_news_before_bars() -> None:
    packed = contexting.pack(_context(), _request("news"), 400)
    assert "headline 0" in packed.text
    assert packed.omitted.get("news", 0) < packed.omitted.get("bars", 61)


def test_section_heading_is_never_left_without_an_item_under_it() -> None:
    for budget in range(30, 120):
        lines = contexting.pack(_context(news=()), _request(), budget).text.splitlines()
        if "# 1m bars, newest first" in lines:
            assert lines[-1].startswith("AAPL ") and lines[-1] != lines[0]


def test_offline_analyst_reads_overbought_and_negative_news_as_bearish() -> None:
    data = contexting.SymbolData(
        "AAPL", _bars(30), {"rsi_14": "81", "macd_histogram": "-1.2", "sma_20": "200"}
    )
    analysis = offline.analyse(_context(symbols=(data,), news=_news(3, "-0.7")), _request())
    assert analysis.outlook == "bearish"
    assert analysis.summary.startswith(offline.LABEL)
    assert any("overbought" in p for p in analysis.key_points)


def test_offline_analyst_without_data_is_neutral_and_says_so() -> None:
    empty = contexting.Context((contexting.SymbolData("ZZZ"),), None, None)
    analysis = offline.analyse(empty, _request(symbols=("ZZZ",)))
    assert analysis.outlook == "neutral" and analysis.confidence <= 0.2
    assert any("no stored price history for ZZZ" in r for r in analysis.risks)


def test_offline_portfolio_risk_flags_concentration() -> None:
    positions = (
        contexting.Position("AAPL", D(100), D(150), D(160), D(0)),
        contexting.Position("MSFT", D(5), D(300), D(290), D(0)),
    )
    analysis = offline.analyse(_context(positions=positions), _request("portfolio_risk"))
    assert any("concentration risk" in p for p in analysis.key_points)
    assert any("positions below cost: MSFT" in p for p in analysis.key_points)
