"""Portfolios: positions at average cost, realized and unrealized P&L, value and metrics.

``positions``, ``valuation`` and ``metrics`` are pure; ``ledger`` applies executions in the
caller's transaction (the order service calls it) and ``routes`` serves the REST API.
"""
