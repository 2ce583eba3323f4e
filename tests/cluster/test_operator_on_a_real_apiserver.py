"""The operator against a real apiserver, as the chart's ServiceAccount."""

from __future__ import annotations

import functools
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from starkmatter.alerts import evaluating
from starkmatter_operator import testing
from tests.cluster.conftest import OPERATOR_NS, OperatorProcess, platform_secrets, wait_for

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manifests" / "samples"
CSV_FEED = Path(__file__).with_name("marketfeed-csv-backfill.yaml")


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == kind), {})


def get(cluster: testing.ControlPlane, kind: str, namespace: str, name: str) -> Any:
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def ready(cluster: testing.ControlPlane, kind: str, namespace: str, name: str) -> Any:
    obj = get(cluster, kind, namespace, name)
    return obj if obj and condition(obj, "Ready").get("status") == "True" else None


def gone(cluster: testing.ControlPlane, kind: str, namespace: str, name: str) -> bool:
    return get(cluster, kind, namespace, name) is None


def apply_sample(cluster: testing.ControlPlane, namespace: str, kind: str) -> dict[str, Any]:
    cluster.kubectl("apply", "-n", namespace, "-f", str(SAMPLES / f"{kind}.yaml"))
    return dict(yaml.safe_load((SAMPLES / f"{kind}.yaml").read_text()))


def test_marketfeed_gets_owned_children_and_becomes_ready(cluster, operator, namespace):
    apply_sample(cluster, namespace, "marketfeed")
    feed = wait_for(lambda: ready(cluster, "mf", namespace, "us-equities"), 60, "feed Ready")
    assert feed["status"]["observedGeneration"] == feed["metadata"]["generation"]
    assert feed["status"]["readyReplicas"] == 3
    assert feed["status"]["symbolCount"] == 5
    assert condition(feed, "Degraded")["status"] == "False"
    assert condition(feed, "Progressing")["status"] == "False"
    assert condition(feed, "Ready")["lastTransitionTime"]
    for kind, name in [
        ("configmap", "us-equities-feed"),
        ("deployment", "us-equities-ingest"),
        ("deployment", "us-equities-gateway"),
        ("service", "us-equities-gateway"),
    ]:
        child = get(cluster, kind, namespace, name)
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("MarketFeed", feed["metadata"]["uid"])
    table = cluster.kubectl("get", "mf", "-n", namespace).stdout
    assert table.split()[:6] == ["NAME", "READY", "SYMBOLS", "TICKS/S", "LAST", "TICK"]
    assert "True" in table and " 5 " in table


def test_feed_heartbeat_in_redis_shows_in_status(cluster, operator, namespace, heartbeat_redis_url):
    apply_sample(cluster, namespace, "marketfeed")
    client = redis.Redis.from_url(heartbeat_redis_url)
    try:
        client.hset(
            "feed:heartbeat:us-equities",
            mapping={
                "last_tick_ts": "2026-11-25T12:00:00.5+00:00",
                "ticks_per_s": "412.5",
                "rejected_per_s": "0.25",
                "updated_ts": "2026-11-25T12:00:01+00:00",
            },
        )
        feed = wait_for(
            lambda: (
                (f := get(cluster, "mf", namespace, "us-equities"))
                and f.get("status", {}).get("ticksPerSecond") == 412.5
                and f
            ),
            30,
            "heartbeat in status",
        )
        assert feed["status"]["lastTickTime"] == "2026-11-25T12:00:00Z"
        assert feed["status"]["rejectedPerSecond"] == 0.25
    finally:
        client.delete("feed:heartbeat:us-equities")
        client.close()


def test_csv_feed_status_says_when_its_replay_finished(
    cluster, operator, namespace, heartbeat_redis_url
):
    """Hand-written heartbeats (the worker's own are in the replay-source test): a replay
    in progress, then finished, with no new ticks: finished, not a feed that stopped."""
    key = "feed:heartbeat:aapl-backfill"
    client = redis.Redis.from_url(heartbeat_redis_url)
    client.delete(key)
    try:
        cluster.kubectl("apply", "-n", namespace, "-f", str(CSV_FEED))
        client.hset(
            key,
            mapping={
                "last_tick_ts": "2026-12-03T06:00:00.25Z",
                "ticks_per_s": "812.0",
                "rejected_per_s": "0.0",
                "updated_ts": "2026-12-03T06:00:01Z",
            },
        )

        def replay(status: str) -> Any:
            feed = get(cluster, "mf", namespace, "aapl-backfill")
            return feed if condition(feed or {}, "ReplayFinished").get("status") == status else None

        feed = wait_for(lambda: replay("False"), 60, "ReplayFinished=False while replaying")
        assert condition(feed, "ReplayFinished")["reason"] == "Replaying"
        assert "replayFinishedTime" not in feed["status"]
        client.hset(
            key,
            mapping={
                "ticks_per_s": "0.0",
                "updated_ts": "2026-12-03T06:05:00Z",
                "replay_finished_ts": "2026-12-03T06:00:02.731904Z",
            },
        )
        feed = wait_for(lambda: replay("True"), 30, "ReplayFinished=True")
        assert feed["status"]["replayFinishedTime"] == "2026-12-03T06:00:02Z"
        assert feed["status"]["ticksPerSecond"] == 0
        finished = condition(feed, "ReplayFinished")
        assert finished["reason"] == "ReplayFinished"
        assert "stored at 2026-12-03T06:00:02Z" in finished["message"]
        # Finished and idle is healthy: no stale-tick complaint.
        assert condition(feed, "Degraded")["status"] == "False"
        table = cluster.kubectl("get", "mf", "aapl-backfill", "-n", namespace).stdout
        assert "REPLAY FINISHED" in table.splitlines()[0]
        described = cluster.kubectl("describe", "mf", "aapl-backfill", "-n", namespace).stdout
        assert re.search(r"Replay Finished Time:\s+2026-12-03T06:00:02Z", described)
        events = wait_for(
            lambda: (
                [
                    e
                    for e in cluster.get_json("events", "-n", namespace)["items"]
                    if e["reason"] == "ReplayFinished"
                    and e["involvedObject"]["name"] == "aapl-backfill"
                ]
                or None
            ),
            30,
            "a ReplayFinished event",
        )
        assert events[0]["type"] == "Normal"
        # A new replay (the worker deletes the stamp when it starts): the old finish time
        # leaves the status.
        client.hdel(key, "replay_finished_ts")
        client.hset(key, "ticks_per_s", "640.0")
        feed = wait_for(lambda: replay("False"), 30, "ReplayFinished=False on a new replay")
        assert "replayFinishedTime" not in feed["status"]
    finally:
        client.delete(key)
        client.close()


def _kubelet_says(cluster: testing.ControlPlane, namespace: str, pod: str, **state: Any) -> None:
    """Write a pod's status as a kubelet would (kwok pods run no code and read no Secret).
    The phase stays Running: a Pending pod would be made ready again by kwok."""
    spec = cluster.get_json("pod", pod, "-n", namespace)["spec"]
    ready = "running" in state
    status = {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            *({"type": t, "status": str(ready)} for t in ("Ready", "ContainersReady")),
        ],
        "containerStatuses": [
            {"name": c["name"], "image": c["image"], "imageID": "", "ready": ready,
             "restartCount": 0, "state": state}
            for c in spec["containers"]
        ],
    }  # fmt: skip
    cluster.kubectl(
        "patch", "pod", pod, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def test_missing_secret_is_degraded_with_a_message_that_says_what_to_fix(
    cluster, operator, namespace
):
    """The operator cannot read Secrets: it applies the children, and the kubelet's
    CreateContainerConfigError on their pods (read with the pods list it has) becomes the
    feed's condition, naming the CR field the Secret comes from."""
    cluster.kubectl("delete", "secret", "starkmatter-redis", "-n", namespace)
    apply_sample(cluster, namespace, "marketfeed")
    wait_for(lambda: ready(cluster, "mf", namespace, "us-equities"), 60, "feed Ready on kwok")
    ingest = "app.kubernetes.io/component=ingest"
    (pod,) = cluster.get_json("pods", "-n", namespace, "-l", ingest)["items"]
    name = pod["metadata"]["name"]
    # What a kubelet says first; the feed's Deployment then counts the pod as not ready.
    _kubelet_says(cluster, namespace, name, waiting={"reason": "ContainerCreating"})
    wait_for(
        lambda: (
            condition(get(cluster, "mf", namespace, "us-equities"), "Ready")["status"] == "False"
        ),
        30,
        "feed not Ready",
    )
    # Then why: no Deployment or ReplicaSet changes any more (the pod was already not
    # ready), so only the operator's periodic look at a not-Ready feed's pods can see it.
    message = 'secret "starkmatter-redis" not found'  # the kubelet's own words
    _kubelet_says(
        cluster, namespace, name,
        waiting={"reason": "CreateContainerConfigError", "message": message},
    )  # fmt: skip

    def degraded() -> Any:
        feed = get(cluster, "mf", namespace, "us-equities")
        return feed if condition(feed, "Degraded").get("status") == "True" else None

    feed = wait_for(degraded, 30, f"Degraded condition; operator:\n{operator.log_tail()}")
    cond = condition(feed, "Degraded")
    assert cond["reason"] == "SecretMissing"
    assert cond["message"] == (
        f"Secret {namespace}/starkmatter-redis (spec.redisSecretRef) not found: create it with"
        " key 'url' or point the reference at an existing Secret"
    )
    assert condition(feed, "Ready")["status"] == "False"
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "SecretMissing" in events
    # Fixing the input is enough: the kubelet starts the container once the Secret exists,
    # and the feed follows.
    cluster.kubectl("apply", "-f", "-", input=platform_secrets(namespace))
    _kubelet_says(cluster, namespace, name, running={"startedAt": "2026-01-01T00:00:00Z"})
    wait_for(lambda: ready(cluster, "mf", namespace, "us-equities"), 60, "Ready after fix")
    assert operator.healthy()
    assert 'resource="secrets"' not in operator.metrics()


def test_a_missing_key_that_only_the_kubelet_sees_reaches_a_streaming_newssource(
    cluster, operator, namespace
):
    """No watch announces a pod's waiting reason, and a NewsSource has no heartbeat to
    refresh it by: the operator looks again at the pods of a source that is not Ready."""
    # The database Secret holds its URL under another key than the one the source names.
    cluster.kubectl("delete", "secret", "starkmatter-database", "-n", namespace)
    cluster.kubectl(
        "create", "secret", "generic", "starkmatter-database", "-n", namespace,
        "--from-literal=dsn=postgresql://u:p@db.invalid/sm",
    )  # fmt: skip
    source = {
        "apiVersion": "starkmatter.io/v1alpha1",
        "kind": "NewsSource",
        "metadata": {"name": "wire", "namespace": namespace},
        "spec": {"mode": "streaming", "format": "sse", "url": "https://news.example.com/sse"},
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(source))
    wait_for(lambda: ready(cluster, "nsrc", namespace, "wire"), 60, "source Ready on kwok")
    (pod,) = cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/instance=wire")[
        "items"
    ]
    name = pod["metadata"]["name"]
    _kubelet_says(cluster, namespace, name, waiting={"reason": "ContainerCreating"})
    wait_for(
        lambda: (
            condition(get(cluster, "nsrc", namespace, "wire"), "Ready")["reason"] == "RollingOut"
        ),
        30,
        "source rolling out",
    )
    message = f"couldn't find key url in Secret {namespace}/starkmatter-database"
    _kubelet_says(
        cluster, namespace, name,
        waiting={"reason": "CreateContainerConfigError", "message": message},
    )  # fmt: skip

    def degraded() -> Any:
        found = get(cluster, "nsrc", namespace, "wire")
        return found if condition(found, "Degraded").get("status") == "True" else None

    found = wait_for(degraded, 30, f"Degraded condition; operator:\n{operator.log_tail()}")
    assert condition(found, "Degraded")["reason"] == "SecretMissing"
    assert condition(found, "Degraded")["message"] == (
        f"Secret {namespace}/starkmatter-database (spec.databaseSecretRef) has no key 'url': add it"
    )
    _kubelet_says(cluster, namespace, name, running={"startedAt": "2026-01-01T00:00:00Z"})
    wait_for(lambda: ready(cluster, "nsrc", namespace, "wire"), 60, "Ready after fix")
    assert operator.healthy()


def test_deleted_and_edited_children_are_put_back(cluster, operator, namespace):
    apply_sample(cluster, namespace, "marketfeed")
    wait_for(lambda: ready(cluster, "mf", namespace, "us-equities"), 60, "feed Ready")
    cm = get(cluster, "configmap", namespace, "us-equities-feed")
    cluster.kubectl("delete", "configmap", "us-equities-feed", "-n", namespace)
    wait_for(
        lambda: (
            (c := get(cluster, "configmap", namespace, "us-equities-feed"))
            and c["metadata"]["uid"] != cm["metadata"]["uid"]
        ),
        30,
        "ConfigMap restored",
    )
    cluster.kubectl("scale", "deployment", "us-equities-gateway", "-n", namespace, "--replicas=5")
    wait_for(
        lambda: (
            get(cluster, "deployment", namespace, "us-equities-gateway")["spec"]["replicas"] == 2
        ),
        30,
        "replicas put back",
    )
    cluster.kubectl(
        "patch", "configmap", "us-equities-feed", "-n", namespace,
        "--type=merge", "-p", '{"data": {"feed.json": "{}"}}',
    )  # fmt: skip
    wait_for(
        lambda: json.loads(
            get(cluster, "configmap", namespace, "us-equities-feed")["data"]["feed.json"]
        ).get("symbols"),
        30,
        "config put back",
    )
    cluster.kubectl("delete", "service", "us-equities-gateway", "-n", namespace)
    wait_for(lambda: get(cluster, "service", namespace, "us-equities-gateway"), 30, "Service")
    assert "starkmatter_operator_child_changes_total" in operator.metrics()


def test_spec_change_rolls_the_children(cluster, operator, namespace):
    apply_sample(cluster, namespace, "marketfeed")
    wait_for(lambda: ready(cluster, "mf", namespace, "us-equities"), 60, "feed Ready")
    before = get(cluster, "deployment", namespace, "us-equities-ingest")
    cluster.kubectl(
        "patch", "mf", "us-equities", "-n", namespace, "--type=merge",
        "-p", json.dumps(
            {"spec": {"symbols": ["AAPL", "TSLA"], "gateway": {"autoscaling": {"enabled": True}}}}
        ),
    )  # fmt: skip

    def rolled() -> Any:
        feed = ready(cluster, "mf", namespace, "us-equities")
        return feed if feed and feed["status"]["observedGeneration"] == 2 else None

    feed = wait_for(rolled, 60, "rolled out generation 2")
    assert feed["status"]["symbolCount"] == 2
    after = get(cluster, "deployment", namespace, "us-equities-ingest")
    key = "starkmatter.io/config-hash"
    assert (
        before["spec"]["template"]["metadata"]["annotations"][key]
        != after["spec"]["template"]["metadata"]["annotations"][key]
    )
    config = json.loads(
        get(cluster, "configmap", namespace, "us-equities-feed")["data"]["feed.json"]
    )
    assert config["symbols"] == ["AAPL", "TSLA"]
    assert get(cluster, "hpa", namespace, "us-equities-gateway")
    # Autoscaling off again: the HPA is pruned.
    cluster.kubectl(
        "patch", "mf", "us-equities", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"gateway": {"autoscaling": {"enabled": false}}}}',
    )  # fmt: skip
    wait_for(
        lambda: get(cluster, "hpa", namespace, "us-equities-gateway") is None, 30, "HPA pruned"
    )


def test_deleting_a_feed_garbage_collects_its_children(cluster, operator, namespace):
    apply_sample(cluster, namespace, "marketfeed")
    wait_for(lambda: ready(cluster, "mf", namespace, "us-equities"), 60, "feed Ready")
    cluster.kubectl("delete", "mf", "us-equities", "-n", namespace)
    for kind, name in [
        ("deployment", "us-equities-ingest"),
        ("deployment", "us-equities-gateway"),
        ("service", "us-equities-gateway"),
        ("configmap", "us-equities-feed"),
    ]:
        wait_for(functools.partial(gone, cluster, kind, namespace, name), 60, f"{kind} gone")


def test_newssource_polls_with_a_cronjob_and_streams_with_a_deployment(
    cluster, operator, namespace
):
    apply_sample(cluster, namespace, "newssource")
    source = wait_for(lambda: ready(cluster, "nsrc", namespace, "market-wire"), 30, "Ready")
    assert "scheduled */5 * * * *" in condition(source, "Ready")["message"]
    cron = get(cluster, "cronjob", namespace, "market-wire-news")
    assert cron["spec"]["schedule"] == "*/5 * * * *"
    cluster.kubectl(
        "patch", "nsrc", "market-wire", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"mode": "streaming", "format": "sse"}}',
    )  # fmt: skip
    wait_for(lambda: get(cluster, "cronjob", namespace, "market-wire-news") is None, 30, "pruned")
    source = wait_for(
        lambda: (
            (s := ready(cluster, "nsrc", namespace, "market-wire"))
            and s["status"].get("readyReplicas") == 1
            and s
        ),
        60,
        "streaming Ready",
    )
    assert get(cluster, "deployment", namespace, "market-wire-news")


def test_retentionpolicy_runs_starkmatter_archive_on_its_schedule(cluster, operator, namespace):
    apply_sample(cluster, namespace, "retentionpolicy")
    wait_for(lambda: ready(cluster, "rtp", namespace, "default-retention"), 30, "Ready")
    cron = get(cluster, "cronjob", namespace, "default-retention-archive")
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["archive", "--policy", "default-retention"]
    # CronJob -> Job works in this cluster (controller-manager runs), and the Job's pod
    # passes the restricted Pod Security admission of the namespace.
    cluster.kubectl(
        "create", "job", "manual-run", "--from=cronjob/default-retention-archive", "-n", namespace
    )
    wait_for(
        lambda: cluster.get_json("pods", "-n", namespace, "-l", "job-name=manual-run")["items"],
        30,
        "archive job pod admitted",
    )
    # kwok completes the pod; the Job's outcome becomes the policy's last run.
    policy = wait_for(
        lambda: (
            (p := get(cluster, "rtp", namespace, "default-retention"))
            and p["status"].get("lastJob") == "manual-run"
            and p
        ),
        60,
        "last run in status",
    )
    assert policy["status"]["lastRunTime"] <= policy["status"]["lastSuccessfulRunTime"]


def test_alertrule_is_delivered_to_the_evaluator_and_removed_on_delete(
    cluster, operator, namespace
):
    apply_sample(cluster, namespace, "alertrule")
    rule = wait_for(lambda: ready(cluster, "alr", namespace, "us-equities-stopped"), 30, "Ready")
    assert rule["status"]["prometheusRule"] is False
    key = f"{namespace}.us-equities-stopped.json"
    cm = wait_for(
        lambda: (
            (c := get(cluster, "configmap", OPERATOR_NS, "starkmatter-alert-rules"))
            and key in c.get("data", {})
            and c
        ),
        30,
        "rule in ConfigMap",
    )
    assert json.loads(cm["data"][key])["condition"] == "DataIngestionStopped"
    # The evaluator's gauge says the rule fires: the status says so too.
    evaluating.FIRING.labels(rule=f"{namespace}.us-equities-stopped", severity="critical").set(1)
    rule = wait_for(
        lambda: (
            (r := get(cluster, "alr", namespace, "us-equities-stopped"))
            and r["status"].get("firing") is True
            and r
        ),
        30,
        "firing in status",
    )
    assert rule["status"]["lastFiredTime"]
    assert "True" in cluster.kubectl("get", "alr", "-n", namespace).stdout.split("\n")[1]
    cluster.kubectl("delete", "alr", "us-equities-stopped", "-n", namespace, "--timeout=30s")
    wait_for(
        lambda: (
            key
            not in (get(cluster, "configmap", OPERATOR_NS, "starkmatter-alert-rules") or {}).get(
                "data", {}
            )
        ),
        30,
        "rule removed",
    )


def test_operator_serves_liveness_and_reconcile_metrics(operator):
    assert operator.healthy()
    text = operator.metrics()
    for name in (
        "starkmatter_operator_reconciles_total",
        "starkmatter_operator_reconcile_duration_seconds_bucket",
        "starkmatter_operator_reconcile_errors_total",
    ):
        assert name in text


def test_restart_mid_reconcile_converges(cluster, operator: OperatorProcess, namespace):
    feeds = [
        {
            "apiVersion": "starkmatter.io/v1alpha1",
            "kind": "MarketFeed",
            "metadata": {"name": f"feed-{i}", "namespace": namespace},
            "spec": {"symbols": [f"S{i}"], "gateway": {"replicas": 1}},
        }
        for i in range(15)
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(feeds))
    time.sleep(0.3)
    operator.stop(kill=True)  # SIGKILL: no clean-up, whatever was in flight is lost
    operator.start()
    for i in range(15):
        name = f"feed-{i}"
        wait_for(functools.partial(ready, cluster, "mf", namespace, name), 90, f"{name} Ready")
        assert get(cluster, "deployment", namespace, f"{name}-gateway")


@pytest.mark.timeout(300)
def test_a_burst_of_feeds_all_report_the_generation_they_applied(cluster, operator, namespace):
    """Many CRs at once: every status ends Ready for its own generation. (Passes running
    with stale cached bodies once wrote observedGeneration 0 over 1 and stayed there.)"""
    count = 80
    feeds = [
        {
            "apiVersion": "starkmatter.io/v1alpha1",
            "kind": "MarketFeed",
            "metadata": {"name": f"burst-{i}", "namespace": namespace},
            "spec": {"symbols": ["AAPL"], "ingest": {"replicas": 0}, "gateway": {"replicas": 0}},
        }
        for i in range(count)
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(feeds))

    def settled() -> list[str]:
        items = cluster.get_json("mf", "-n", namespace)["items"]
        behind = [
            f"{f['metadata']['name']}: {(f.get('status') or {}).get('observedGeneration')}"
            for f in items
            if (f.get("status") or {}).get("observedGeneration") != f["metadata"]["generation"]
            or condition(f, "Ready").get("status") != "True"
        ]
        return behind if len(items) == count else ["not all created yet"]

    try:
        wait_for(lambda: not settled(), 180, "every feed Ready for its generation")
    except AssertionError as e:
        raise AssertionError(f"{e}; behind: {settled()[:10]}") from None
    # And it stays so: later passes (child events, refreshes) never report less.
    time.sleep(3)
    assert settled() == []
