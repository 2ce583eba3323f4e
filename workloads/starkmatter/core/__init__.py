"""Shared foundations: settings, database, Redis, auth, audit, metrics, logging."""
