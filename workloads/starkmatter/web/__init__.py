"""The trader web dashboard: static ES modules served by the API gateway (no build step)."""
