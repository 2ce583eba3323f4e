"""Celery: batch jobs on a schedule and the durable path for the seed's event triggers."""
