"""Alerts: operational rules with hysteresis, users' price alerts, delivery."""
