from __future__ import annotations

import json

import pytest

from starkmatter_operator.builders import common, retentionpolicy
from tests.operator.crs import by_kind, make_cr, sample


def test_policy_becomes_an_archive_cronjob_running_starkmatter_archive(cfg):
    manifests = retentionpolicy.build(sample("RetentionPolicy"), cfg)
    (cron,) = by_kind(manifests, "CronJob")
    assert cron["metadata"]["name"] == "default-retention-archive"
    assert cron["spec"]["schedule"] == "0 3 * * *"
    assert cron["spec"]["timeZone"] == "Etc/UTC"
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["archive", "--policy", "default-retention"]
    assert container["envFrom"] == [{"secretRef": {"name": "starkmatter-archive"}}]
    env = {e["name"]: e for e in container["env"]}
    assert env["STARKMATTER_RETENTION_CONFIG"]["value"].endswith("/retention.json")


def test_archive_job_gets_both_server_urls_it_needs_to_start_outside_dev_mode(cfg):
    body = sample("RetentionPolicy")
    (cron,) = by_kind(retentionpolicy.build(body, cfg), "CronJob")
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["STARKMATTER_ENV"]["value"] == "prod"
    for name, secret in [
        ("STARKMATTER_DATABASE_URL", "starkmatter-database"),
        ("STARKMATTER_REDIS_URL", "starkmatter-redis"),
    ]:
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "url"}
    refs = retentionpolicy.required_secrets(body, cfg)
    assert [r.name for r in refs][:2] == ["starkmatter-database", "starkmatter-redis"]


def test_policy_rules_reach_the_job_as_json(cfg):
    (cm,) = by_kind(retentionpolicy.build(sample("RetentionPolicy"), cfg), "ConfigMap")
    rules = json.loads(cm["data"]["retention.json"])["rules"]
    assert {"dataset": "sessions", "olderThanDays": 30, "action": "delete"} in rules


def test_archive_credentials_secret_is_checked_without_a_key(cfg):
    refs = retentionpolicy.required_secrets(sample("RetentionPolicy"), cfg)
    assert (
        common.SecretKeyRef("starkmatter-archive", None, "spec.archive.credentialsSecretRef")
        in refs
    )


def test_file_archive_gets_a_writable_volume_on_a_read_only_root(cfg):
    body = make_cr(
        "RetentionPolicy",
        {
            "rules": [{"dataset": "ticks", "olderThanDays": 7}],
            "archive": {"url": "file:///archive"},
        },
    )
    cron = by_kind(retentionpolicy.build(body, cfg), "CronJob")[0]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert "/archive" in mounts


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"rules": [{"dataset": "ticks", "olderThanDays": 7}]}, "spec.archive is required"),
        (
            {
                "rules": [
                    {"dataset": "ticks", "olderThanDays": 7, "action": "delete"},
                    {"dataset": "ticks", "olderThanDays": 9, "action": "delete"},
                ]
            },
            "only one rule (repeated: ticks)",
        ),
        (
            {"rules": [{"dataset": "audit", "olderThanDays": 7, "action": "archiveThenDelete"}]},
            "append-only",
        ),
        ({"rules": []}, "at least one rule"),
        (
            {
                "rules": [{"dataset": "ticks", "olderThanDays": 7, "action": "archiveThenDelete"}],
                "archive": {"url": "file:///archive"},
            },
            "needs an s3:// archive",
        ),
        (
            {
                "schedule": "0 25 * * *",
                "rules": [{"dataset": "ticks", "olderThanDays": 1, "action": "delete"}],
            },
            "hour '25'",
        ),
    ],
)
def test_retentionpolicy_the_operator_cannot_act_on_is_refused_with_a_reason(cfg, spec, message):
    with pytest.raises(common.InvalidSpec) as raised:
        retentionpolicy.build(make_cr("RetentionPolicy", spec), cfg)
    assert message in str(raised.value)
