"""StarkMatter: a trading-data platform (market data, orders, portfolios, news, AI analysis)."""

__version__ = "0.1.0"
