"""The Celery application: reliable settings, the beat schedule, the dead-letter queue.

Reliability: a task is acknowledged only after it ran (``acks_late``) and is given back
to the broker if its worker dies (``reject_on_worker_lost``); each worker takes one task at
a time (prefetch 1) so a crash loses no prefetched work. Tasks are idempotent (they may
run twice), retry with exponential backoff and jitter, and after their last retry land in
``task_dead_letters`` (PostgreSQL) for inspection and replay.
"""

from __future__ import annotations

import os
from typing import Any

import celery
from celery import signals
from celery.schedules import crontab

QUEUE = "starkmatter"


def _every(name: str, default_s: float) -> float:
    return float(os.environ.get(f"STARKMATTER_TASKS_{name}_S", default_s))


def beat_schedule(dev: bool) -> dict[str, dict[str, Any]]:
    """Frequencies of the seed (1 min, 5 min, hourly), each configurable in seconds."""
    schedule: dict[str, dict[str, Any]] = {
        "pnl-recalculation": {
            "task": "starkmatter.tasks.jobs.recalculate_pnl",
            "schedule": _every("PNL", 60),
        },
        "historical-backfill": {
            "task": "starkmatter.tasks.jobs.backfill_from_files",
            "schedule": _every("BACKFILL", 3600),
        },
        "daily-portfolio-report": {
            "task": "starkmatter.tasks.jobs.daily_portfolio_reports",
            "schedule": crontab(minute="5", hour="0"),
        },
    }
    if dev:
        schedule["news-polling"] = {
            "task": "starkmatter.tasks.jobs.poll_sample_news",
            "schedule": _every("NEWS", 300),
        }
    return schedule


def create(broker_url: str | None = None, *, dev: bool | None = None) -> celery.Celery:
    broker = (
        broker_url
        or os.environ.get("STARKMATTER_CELERY_BROKER_URL")
        or os.environ.get("STARKMATTER_REDIS_URL")
        or "redis://127.0.0.1:6379/0"
    )
    dev = dev if dev is not None else os.environ.get("STARKMATTER_ENV") == "dev"
    app = celery.Celery("starkmatter", broker=broker, include=["starkmatter.tasks.jobs"])
    app.conf.update(
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_time_limit=15 * 60,
        task_soft_time_limit=14 * 60,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        enable_utc=True,
        timezone="UTC",
        # Longer than the longest task: a late-acked task is redelivered only if its
        # worker really went away.
        broker_transport_options={"visibility_timeout": 3600},
        broker_connection_retry_on_startup=True,
        beat_schedule=beat_schedule(dev),
        worker_hijack_root_logger=False,
    )
    return app


app = create()


@signals.task_failure.connect
def _dead_letter(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    **_: Any,
) -> None:
    """After the last retry a failed task is written to the dead-letter table."""
    if sender is None or task_id is None:
        return
    from starkmatter.tasks import deadletters

    retries = getattr(sender.request, "retries", 0)
    deadletters.record_sync(
        task_id, sender.name, list(args or []), dict(kwargs or {}), repr(exception), retries
    )
