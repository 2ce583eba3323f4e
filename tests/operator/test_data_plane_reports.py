from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import prometheus_client
import pytest

from starkmatter.retention import archiving, worker
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


def _report(dataset: str, archived: int, purged: int) -> archiving.DatasetReport:
    cutoff = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return archiving.DatasetReport(
        dataset, "archive", cutoff, dry_run=False, archived=archived, purged=purged
    )


def _archive_pod(phase: str, message: str | None) -> dict[str, Any]:
    terminated = {"exitCode": 0 if phase == "Succeeded" else 1, "reason": "Completed"}
    if message is not None:
        terminated["message"] = message
    return {
        "metadata": {"name": f"run-{phase.lower()}"},
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "archive", "state": {"terminated": terminated}}],
        },
    }


def test_the_archive_summary_is_one_line_the_operator_counts():
    runs = [_report(f"dataset{i}", 1000 + i, i) for i in range(200)]
    text = worker.summary("news-retention", runs, dry_run=False)
    assert "\n" not in text
    # Totals only: the same size for 200 data sets as for one, far below the kubelet's 4096.
    assert len(text.encode()) < 200
    assert reports.rows_archived(text) == sum(1000 + i for i in range(200))
    assert json.loads(text)["purged"] == sum(range(200))


def test_rows_archived_come_from_the_successful_pods_termination_message():
    summary = worker.summary("p", [_report("news", 7, 0)], dry_run=False)
    # A failed run's message is its log tail (FallbackToLogsOnError): never counted.
    failed = _archive_pod("Failed", json.dumps({"dataset": "news", "archived": 99}))
    assert reports.pods_rows_archived([failed, _archive_pod("Succeeded", summary)]) == 7
    assert reports.pods_rows_archived([failed]) is None
    # An image from before the summary leaves no message: the count is unknown, not 0.
    assert reports.pods_rows_archived([_archive_pod("Succeeded", None)]) is None


def test_the_summary_is_written_where_the_kubelet_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "termination-log"
    monkeypatch.setenv(worker.TERMINATION_MESSAGE_PATH_ENV, str(path))
    worker.write_termination_message("{}")
    assert not path.exists(), "outside a container (no file from the kubelet) nothing is made"
    path.touch()
    worker.write_termination_message("x" * 10_000)
    assert path.read_bytes() == b"x" * worker.TERMINATION_MESSAGE_LIMIT
    monkeypatch.setenv(worker.TERMINATION_MESSAGE_PATH_ENV, str(tmp_path))  # a directory
    worker.write_termination_message("{}")  # the run still succeeds


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
