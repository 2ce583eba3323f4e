"""Retention: archive rows past their age to object storage, then purge; legal holds exempt."""
