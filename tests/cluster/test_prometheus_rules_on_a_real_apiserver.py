"""Where the Prometheus Operator's PrometheusRule CRD is installed, every enabled
AlertRule also gets a PrometheusRule (runs last: it installs that CRD in the cluster)."""

from __future__ import annotations

import yaml

from starkmatter_operator import testing
from tests.cluster.conftest import wait_for
from tests.cluster.test_operator_on_a_real_apiserver import apply_sample, get, ready

# The part of the Prometheus Operator's CRD that matters here: group, names, a spec.
PROMETHEUS_RULE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "prometheusrules.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"kind": "PrometheusRule", "plural": "prometheusrules",
                  "singular": "prometheusrule", "listKind": "PrometheusRuleList"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}},
        }],
    },
}  # fmt: skip


def test_alert_rule_gets_a_prometheus_rule_where_the_crd_exists(
    cluster: testing.ControlPlane, operator, namespace: str
):
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(PROMETHEUS_RULE_CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/prometheusrules.monitoring.coreos.com"
    )
    apply_sample(cluster, namespace, "alertrule")
    wait_for(lambda: ready(cluster, "alr", namespace, "us-equities-stopped"), 30, "Ready")
    rule = wait_for(
        lambda: get(cluster, "prometheusrule", namespace, "us-equities-stopped-alert"),
        60,
        "PrometheusRule",
    )
    (owner,) = rule["metadata"]["ownerReferences"]
    assert owner["kind"] == "AlertRule"
    expr = rule["spec"]["groups"][0]["rules"][0]["expr"]
    assert expr == f'max(starkmatter_alerts_firing{{rule="{namespace}.us-equities-stopped"}}) > 0'
    wait_for(
        lambda: get(cluster, "alr", namespace, "us-equities-stopped")["status"]["prometheusRule"],
        30,
        "status.prometheusRule",
    )
    # A disabled rule keeps its evaluator entry but no PrometheusRule.
    cluster.kubectl(
        "patch", "alr", "us-equities-stopped", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"enabled": false}}',
    )  # fmt: skip
    wait_for(
        lambda: get(cluster, "prometheusrule", namespace, "us-equities-stopped-alert") is None,
        30,
        "PrometheusRule pruned",
    )
