"""RetentionPolicy -> ConfigMap + archival CronJob running `starkmatter archive`."""

from __future__ import annotations

from typing import Any

from starkmatter_operator import config, validation
from starkmatter_operator.builders import common


def names(policy: str) -> dict[str, str]:
    return {"config": f"{policy}-retention", "cronjob": f"{policy}-archive"}


def required_secrets(body: common.Body, cfg: config.OperatorConfig) -> list[common.SecretKeyRef]:
    spec = common.spec_of(body)
    refs = [
        common.spec_secret_ref(spec, "databaseSecretRef", "starkmatter-database"),
        common.spec_secret_ref(spec, "redisSecretRef", "starkmatter-redis"),
    ]
    creds = (spec.get("archive") or {}).get("credentialsSecretRef")
    if creds:
        refs.append(common.SecretKeyRef(creds["name"], None, "spec.archive.credentialsSecretRef"))
    return refs


def build(body: common.Body, cfg: config.OperatorConfig) -> list[common.Manifest]:
    policy = common.name_of(body)
    spec = common.spec_of(body)
    problems = validation.name_problems(policy) + validation.retentionpolicy_problems(spec)
    if problems:
        raise common.InvalidSpec(problems)
    n = names(policy)
    policy_json = common.canonical_json({"name": policy, **spec})
    env: list[dict[str, Any]] = [
        common.secret_env(
            "STARKMATTER_DATABASE_URL", spec.get("databaseSecretRef") or {}, "starkmatter-database"
        ),
        # Outside dev mode every entry point refuses to start without a Redis URL.
        common.secret_env(
            "STARKMATTER_REDIS_URL", spec.get("redisSecretRef") or {}, "starkmatter-redis"
        ),
        {"name": "STARKMATTER_RETENTION_CONFIG", "value": f"{common.CONFIG_DIR}/retention.json"},
    ]
    archive = spec.get("archive") or {}
    if archive.get("endpoint"):
        env.append({"name": "AWS_ENDPOINT_URL", "value": str(archive["endpoint"])})
    main = common.container(
        cfg,
        name="archive",
        args=["archive", "--policy", policy],
        env=env,
        mounts=[common.config_mount()],
        # Archival runs are short but may stream many rows: a bit more memory than a worker.
        resources_spec={"cpu": "200m", "memory": "512Mi"},
    )
    creds = archive.get("credentialsSecretRef")
    if creds:
        main["envFrom"] = [{"secretRef": {"name": creds["name"]}}]
    archive_url = str(archive.get("url", ""))
    volumes = [common.config_volume(n["config"])]
    if archive_url.startswith("file://"):
        # A dev cluster archives to a local directory: give the job a writable scratch volume.
        path = archive_url.removeprefix("file://")
        main["volumeMounts"].append({"name": "archive", "mountPath": path})
        volumes.append({"name": "archive", "emptyDir": {}})
    return [
        common.config_map(body, n["config"], "retention-config", "retention.json", policy_json),
        common.cron_job(
            body,
            name=n["cronjob"],
            component="archive",
            schedule=str(spec.get("schedule", "0 3 * * *")),
            time_zone=str(spec.get("timeZone", "Etc/UTC")),
            suspend=bool(spec.get("suspend", False)),
            pod=common.pod_spec([main], volumes, restart_policy="Never"),
            template_annotations={"starkmatter.io/config-hash": common.content_hash(policy_json)},
            backoff_limit=int(spec.get("backoffLimit", 2)),
            active_deadline_s=int(spec.get("activeDeadlineSeconds", 3600)),
        ),
    ]
