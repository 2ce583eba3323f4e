"""``starkmatter worker`` and ``starkmatter beat``: Celery's own entry points on our app."""

from __future__ import annotations

import os

from starkmatter.tasks import app as tasks_app


def run_worker(concurrency: int | None = None, extra: list[str] | None = None) -> None:
    """Consume the ``starkmatter`` queue; blocks until the worker is stopped."""
    argv = ["worker", "--loglevel=INFO", "-Q", tasks_app.QUEUE, "--without-gossip"]
    argv += ["--concurrency", str(concurrency or os.cpu_count() or 1)]
    tasks_app.app.worker_main(argv + (extra or []))


def run_beat(schedule_file: str | None = None, extra: list[str] | None = None) -> None:
    """Send the scheduled jobs; run exactly one beat per deployment."""
    argv = ["beat", "--loglevel=INFO"]
    if schedule_file:
        argv += ["--schedule", schedule_file]
    tasks_app.app.start(argv + (extra or []))
