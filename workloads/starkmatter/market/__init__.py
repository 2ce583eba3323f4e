"""Market data: the canonical model, validation, normalizing, bars, indicators and storage."""
