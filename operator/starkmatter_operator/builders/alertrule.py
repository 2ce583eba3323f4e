"""AlertRule -> one key of the alert evaluator's rules ConfigMap (+ a PrometheusRule).

The evaluator reads one JSON file per rule from a single ConfigMap in its own namespace.
Rules from every namespace share that ConfigMap, so each rule is applied with its own
field manager: server-side apply then adds or removes exactly that rule's key, with no
read-modify-write race between rules. A cross-namespace object cannot have an owner
reference, so the operator removes the key itself when the rule is deleted.
"""

from __future__ import annotations

from starkmatter_operator import config, validation
from starkmatter_operator.builders import common


def rule_name(body: common.Body) -> str:
    """The evaluator names a rule after its file: unique across namespaces."""
    return f"{common.namespace_of(body)}.{common.name_of(body)}"


def rule_key(body: common.Body) -> str:
    return f"{rule_name(body)}.json"


def field_manager(body: common.Body) -> str:
    return f"{config.FIELD_MANAGER}.alertrule.{body['metadata']['uid']}"


def rules_config_map(cfg: config.OperatorConfig, data: dict[str, str]) -> common.Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": cfg.alerts_configmap,
            "namespace": cfg.alerts_namespace,
            "labels": {
                "app.kubernetes.io/name": "starkmatter",
                "app.kubernetes.io/component": "alert-rules",
                "app.kubernetes.io/part-of": "starkmatter",
            },
        },
        **({"data": data} if data else {}),
    }


def build(
    body: common.Body, cfg: config.OperatorConfig, *, prometheus_rules: bool = False
) -> list[common.Manifest]:
    rule = common.name_of(body)
    spec = common.spec_of(body)
    problems = validation.name_problems(rule) + validation.alertrule_problems(spec)
    if problems:
        raise common.InvalidSpec(problems)
    # A bare spec: the evaluator takes the rule's name from the file name.
    manifests = [rules_config_map(cfg, {rule_key(body): common.canonical_json(dict(spec))})]
    if prometheus_rules:
        alert_labels = {"severity": str(spec.get("severity", "warning"))}
        if spec.get("feed"):
            alert_labels["feed"] = str(spec["feed"])
        if spec.get("symbol"):
            alert_labels["symbol"] = str(spec["symbol"])
        selector = f'rule="{rule_name(body)}"'
        manifests.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": common.metadata(body, f"{rule}-alert", "alert-rule"),
                "spec": {
                    "groups": [
                        {
                            "name": f"starkmatter.{common.namespace_of(body)}.{rule}",
                            "rules": [
                                {
                                    "alert": f"StarkMatter{spec['condition']}",
                                    # The evaluator exports one gauge per rule; Prometheus
                                    # then routes it like any other alert.
                                    "expr": f"max(starkmatter_alerts_firing{{{selector}}}) > 0",
                                    "for": str(spec.get("for", "5m")),
                                    "labels": alert_labels,
                                    "annotations": {
                                        "summary": str(
                                            spec.get("summary") or f"{spec['condition']} ({rule})"
                                        )
                                    },
                                }
                            ],
                        }
                    ]
                },
            }
        )
    return manifests


def required_secrets(body: common.Body, cfg: config.OperatorConfig) -> list[common.SecretKeyRef]:
    return []  # the evaluator holds the platform's connections; a rule references nothing
