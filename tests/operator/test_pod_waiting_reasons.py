"""A CR's Degraded condition from what the kubelet says about its pods (the operator
cannot read Secrets, so the kubelet's CreateContainerConfigError is how it learns that one
is missing)."""

from __future__ import annotations

from typing import Any

from starkmatter_operator import conditions, kube, pods, reporting, state
from starkmatter_operator.builders import common, marketfeed
from tests.operator.crs import sample


def pod(name: str, message: str, *, reason: str = pods.CONFIG_ERROR) -> dict[str, Any]:
    waiting = {"reason": reason, "message": message}
    return {
        "metadata": {"name": name},
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {"name": "ingest", "ready": False, "state": {"waiting": waiting}}
            ],
        },
    }


# Verbatim kubelet messages (pkg/kubelet/kubelet_pods.go, v1.37).
NO_SECRET = 'secret "starkmatter-redis" not found'
NO_KEY = "couldn't find key url in Secret trading/starkmatter-database"


def test_a_missing_secret_names_the_field_and_the_key_to_create(cfg):
    refs = marketfeed.required_secrets(sample("MarketFeed"), cfg)
    found = pods.blocked("trading", refs, pods.config_errors([pod("a", NO_SECRET)]))
    assert found == pods.Blocked(
        "SecretMissing",
        "Secret trading/starkmatter-redis (spec.redisSecretRef) not found: create it with key"
        " 'url' or point the reference at an existing Secret",
    )


def test_a_missing_key_says_which_key_to_add(cfg):
    refs = marketfeed.required_secrets(sample("MarketFeed"), cfg)
    found = pods.blocked("trading", refs, pods.config_errors([pod("a", NO_KEY)]))
    assert found == pods.Blocked(
        "SecretMissing",
        "Secret trading/starkmatter-database (spec.databaseSecretRef) has no key 'url': add it",
    )


def test_every_replica_saying_the_same_gives_one_message(cfg):
    refs = marketfeed.required_secrets(sample("MarketFeed"), cfg)
    errors = pods.config_errors([pod(f"p{i}", NO_SECRET) for i in range(50)])
    assert len(errors) == 50
    found = pods.blocked("trading", refs, errors)
    assert found is not None and found.message.count("starkmatter-redis") == 1


def test_other_config_errors_keep_the_kubelet_reason_and_message():
    message = "couldn't find key feed.csv in ConfigMap trading/prices"
    found = pods.blocked("trading", [], pods.config_errors([pod("ingest-1", message)]))
    assert found == pods.Blocked(pods.CONFIG_ERROR, f"pod ingest-1: container ingest: {message}")


def test_pods_that_wait_for_anything_else_say_nothing(cfg):
    refs = [common.SecretKeyRef("starkmatter-redis", "url", "spec.redisSecretRef")]
    waiting = [pod("a", "", reason="ContainerCreating"), {"metadata": {"name": "b"}, "status": {}}]
    assert pods.config_errors(waiting) == []
    assert pods.blocked("trading", refs, []) is None


def _runtime(cfg) -> state.Runtime:
    # Never connects: only what the watches remembered is read.
    return state.Runtime(cfg, kube.Kube(lambda: kube.Credentials("https://invalid", None, False)))


def _job(rt: state.Runtime, name: str, owner: str, status: dict[str, Any]) -> None:
    labels = {"starkmatter.io/owner-kind": "retentionpolicy", "starkmatter.io/owner-name": owner}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "trading", "labels": labels},
        "status": status,
    }
    state.remember(rt, job)


def test_only_a_cr_with_pods_not_running_has_its_pods_listed(cfg):
    rt = _runtime(cfg)
    feed, policy = sample("MarketFeed"), sample("RetentionPolicy")
    rule = sample("AlertRule")
    assert reporting.waits_on_pods(rt, feed, conditions.Health(desired=3, ready=2))
    assert not reporting.waits_on_pods(rt, feed, conditions.Health(desired=3, ready=3))
    assert not reporting.waits_on_pods(rt, rule, conditions.Health())
    # A policy's pods run in its Jobs: looked at while one of them is active.
    name = policy["metadata"]["name"]
    _job(rt, "done", name, {"succeeded": 1, "completionTime": "2026-11-25T03:00:10Z"})
    _job(rt, "other-policys", "someone-else", {"active": 1})
    assert not reporting.waits_on_pods(rt, policy, conditions.Health())
    _job(rt, "running", name, {"active": 1})
    assert reporting.waits_on_pods(rt, policy, conditions.Health())
