"""NewsSource -> ConfigMap + polling CronJob, or ConfigMap + streaming Deployment."""

from __future__ import annotations

from starkmatter_operator import config, validation
from starkmatter_operator.builders import common


def names(source: str) -> dict[str, str]:
    return {"config": f"{source}-news-config", "workload": f"{source}-news"}


def required_secrets(body: common.Body, cfg: config.OperatorConfig) -> list[common.SecretKeyRef]:
    spec = common.spec_of(body)
    return [
        common.spec_secret_ref(spec, "databaseSecretRef", "starkmatter-database"),
        common.spec_secret_ref(spec, "redisSecretRef", "starkmatter-redis"),
        *common.credentials_refs(spec),
    ]


def build(body: common.Body, cfg: config.OperatorConfig) -> list[common.Manifest]:
    source = common.name_of(body)
    spec = common.spec_of(body)
    problems = validation.name_problems(source) + validation.newssource_problems(spec)
    if problems:
        raise common.InvalidSpec(problems)
    n = names(source)
    news_json = common.canonical_json({"name": source, **spec})
    annotations = {"starkmatter.io/config-hash": common.content_hash(news_json)}
    env = [
        common.secret_env(
            "STARKMATTER_DATABASE_URL", spec.get("databaseSecretRef") or {}, "starkmatter-database"
        ),
        common.secret_env(
            "STARKMATTER_REDIS_URL", spec.get("redisSecretRef") or {}, "starkmatter-redis"
        ),
        {"name": "STARKMATTER_NEWS_CONFIG", "value": f"{common.CONFIG_DIR}/news.json"},
        {"name": "STARKMATTER_METRICS_PORT", "value": str(common.METRICS_PORT)},
    ]
    creds = spec.get("credentialsSecretRef")
    if creds:
        env.append(
            {
                "name": "STARKMATTER_NEWS_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {"name": creds["name"], "key": creds.get("key", "token")}
                },
            }
        )
    streaming = spec.get("mode", "polling") == "streaming"
    suspend = bool(spec.get("suspend", False))
    main = common.container(
        cfg,
        name="news",
        args=["news", "--source", source],
        env=env,
        mounts=[common.config_mount()],
        ports=[{"name": "metrics", "containerPort": common.METRICS_PORT}] if streaming else None,
        probes=common.http_probes("metrics") if streaming else None,
    )
    volumes = [common.config_volume(n["config"])]
    workload: common.Manifest
    if streaming:
        workload = common.deployment(
            body,
            name=n["workload"],
            component="news",
            replicas=0 if suspend else int(spec.get("replicas", 1)),
            pod=common.pod_spec([main], volumes),
            template_annotations=annotations,
            # One stream per source: a second reader would store every article twice.
            strategy="Recreate",
        )
    else:
        workload = common.cron_job(
            body,
            name=n["workload"],
            component="news",
            schedule=str(spec.get("schedule", "*/5 * * * *")),
            time_zone=str(spec.get("timeZone", "Etc/UTC")),
            suspend=suspend,
            pod=common.pod_spec([main], volumes, restart_policy="Never"),
            template_annotations=annotations,
            backoff_limit=1,
            active_deadline_s=600,
        )
    return [common.config_map(body, n["config"], "news-config", "news.json", news_json), workload]
