"""Broker adapters: ``paper`` (the default, fills against live quotes and depth) and
``alpaca`` (the Alpaca trading API). ``base`` is the interface the worker drives."""
