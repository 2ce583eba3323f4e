"""Tier 2: the chart and the plain manifests, rendered and checked without a cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from starkmatter_operator import testing

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "starkmatter"
HERE = Path(__file__).parent
VALUES = {"default": [], "full": [HERE / "values-full.yaml"], "dev": [HERE / "values-dev.yaml"]}
# Kinds that kubernetes-validate has no schema for (CRDs of other projects).
SECRET_ENV = {
    "STARKMATTER_DATABASE_URL", "STARKMATTER_REDIS_URL", "STARKMATTER_OPERATOR_REDIS_URL",
    "ANTHROPIC_API_KEY",
}  # fmt: skip
FOREIGN_KINDS = {"ServiceMonitor", "ClusterKopfPeering", "PrometheusRule"}

pytestmark = pytest.mark.skipif(
    bool(testing.missing_binaries()), reason="kube tools not built: run make k8s-tools"
)


def helm(*args: str) -> str:
    result = subprocess.run(
        [str(testing.bin_dir() / "helm"), *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(values: list[Path]) -> list[dict[str, Any]]:
    flags = [arg for v in values for arg in ("-f", str(v))]
    text = helm("template", "sm", str(CHART), "--namespace", "trading", *flags)
    return [d for d in yaml.safe_load_all(text) if d]


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec") or {}
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [spec["template"]["spec"]]
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def test_chart_passes_helm_lint_strict():
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "-f", str(VALUES["full"][0]))


@pytest.mark.parametrize("variant", sorted(VALUES))
def test_every_rendered_object_is_valid_for_kubernetes_1_37(variant):
    for obj in render(VALUES[variant]):
        if obj["kind"] in FOREIGN_KINDS:
            continue
        kubernetes_validate.validate(obj, "1.37", strict=True)


@pytest.mark.parametrize("variant", sorted(VALUES))
def test_every_pod_meets_the_restricted_pod_security_profile(variant):
    pods = [(o["metadata"]["name"], p) for o in render(VALUES[variant]) for p in pod_specs(o)]
    assert pods
    for name, pod in pods:
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, name
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert psc["runAsUser"] > 0, name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "privileged" not in sc, name
            assert c["resources"]["requests"], name
            assert c["readinessProbe"] and c["livenessProbe"], name


def test_full_values_render_every_optional_object():
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render(VALUES["full"])}
    for expected in [
        ("Ingress", "sm"),
        ("HorizontalPodAutoscaler", "sm-api"),
        ("HorizontalPodAutoscaler", "sm-worker"),
        ("PodDisruptionBudget", "sm-operator"),
        ("PodDisruptionBudget", "sm-web"),
        ("ServiceMonitor", "sm"),
        ("NetworkPolicy", "sm-default-deny"),
        ("ClusterRole", "sm-operator"),
    ]:
        assert expected in kinds


def test_dev_values_bundle_one_postgresql_and_one_redis():
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render(VALUES["dev"])}
    assert {("StatefulSet", "sm-postgresql"), ("StatefulSet", "sm-redis")} <= kinds
    assert ("StatefulSet", "sm-postgresql") not in {
        (o["kind"], o["metadata"]["name"]) for o in render(VALUES["full"])
    }


def test_secrets_are_referenced_never_inlined_in_pod_specs():
    for obj in render(VALUES["full"]):
        for pod in pod_specs(obj):
            for c in pod["containers"]:
                for env in c.get("env", []):
                    if env["name"] in SECRET_ENV or env["name"].endswith(("_PASSWORD", "_TOKEN")):
                        assert "secretKeyRef" in env.get("valueFrom", {}), env


def test_operator_rbac_is_least_privilege():
    (role,) = [o for o in render([]) if o["kind"] == "ClusterRole"]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"]


def test_chart_crds_are_the_crds_of_crds_dir():
    for source in sorted((ROOT / "crds").glob("*.yaml")):
        assert (CHART / "crds" / source.name).read_text() == source.read_text(), (
            f"{source.name} drifted: run hack/kube/render-manifests.sh"
        )


def test_plain_manifests_are_rendered_from_the_chart():
    rendered = helm(
        "template", "starkmatter", str(CHART), "--namespace", "starkmatter", "--skip-crds",
        "--set", "postgresql.bundled=true", "--set", "redisServer.bundled=true",
    )  # fmt: skip
    committed = (ROOT / "manifests" / "10-starkmatter.yaml").read_text()
    body = "\n".join(line for line in committed.splitlines() if not line.startswith("# "))
    assert yaml.safe_load_all(body) and list(yaml.safe_load_all(body)) == list(
        yaml.safe_load_all(rendered)
    ), "manifests/ drifted from the chart: run hack/kube/render-manifests.sh"
    crds = list(yaml.safe_load_all((ROOT / "manifests" / "00-crds.yaml").read_text()))
    sources = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    assert [c for c in crds if c] == sources


def test_samples_hold_one_valid_custom_resource_of_each_kind():
    kinds = sorted(
        yaml.safe_load(p.read_text())["kind"] for p in (ROOT / "manifests" / "samples").glob("*")
    )
    assert kinds == ["AlertRule", "MarketFeed", "NewsSource", "RetentionPolicy"]
