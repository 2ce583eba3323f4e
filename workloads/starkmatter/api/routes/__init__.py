"""Routers of the API gateway's own endpoints (auth, health)."""
