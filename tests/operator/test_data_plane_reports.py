from __future__ import annotations

import json

import prometheus_client

from starkmatter_operator import evaluator, reports


def test_rows_archived_sums_the_json_report_lines_of_the_archive_job():
    log = "\n".join(
        [
            "2026-11-25 starting",
            json.dumps({"dataset": "ticks", "archived": 1200, "purged": 1200}),
            json.dumps({"dataset": "orders", "archived": 34, "purged": 0}),
            "{not json",
        ]
    )
    assert reports.rows_archived(log) == 1234


def test_a_log_without_reports_tells_nothing():
    assert reports.rows_archived("Traceback ...\nboom") is None


def test_the_latest_finished_job_wins_and_a_failure_is_recognised():
    ok = {"metadata": {"name": "a"}, "status": {"completionTime": "2026-11-25T03:00:10Z"}}
    bad = {
        "metadata": {"name": "b"},
        "status": {
            "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit",
                 "lastTransitionTime": "2026-11-26T03:00:30Z"}
            ]
        },
    }  # fmt: skip
    running = {"metadata": {"name": "c"}, "status": {"active": 1}}
    assert reports.latest_finished([ok, bad, running]) is bad
    assert (
        reports.failed(bad) == "BackoffLimitExceeded: Job has reached the specified backoff limit"
    )
    assert reports.failed(ok) is None


def test_firing_rules_are_read_from_the_evaluator_gauge():
    registry = prometheus_client.CollectorRegistry()
    gauge = prometheus_client.Gauge(
        "starkmatter_alerts_firing", "firing", ["rule", "severity"], registry=registry
    )
    gauge.labels(rule="trading.stopped", severity="critical").set(1)
    gauge.labels(rule="trading.latency", severity="warning").set(0)
    text = prometheus_client.generate_latest(registry).decode()
    assert evaluator.firing_rules(text) == {"trading.stopped": True, "trading.latency": False}
