"""Tier 2: the chart and the plain manifests, rendered and checked without a cluster."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import redis
import yaml

from starkmatter.core import embedded
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


def test_every_platform_process_listens_on_the_pod_address():
    # Probes and Services reach a pod on its own address: a server bound to loopback
    # (the one-machine default) would fail every probe.
    served = set()
    for obj in render(VALUES["full"]):
        for pod in pod_specs(obj):
            for c in pod["containers"]:
                if c.get("args", [""])[0] in {"api", "orders", "alerts", "worker", "beat"}:
                    env = {e["name"]: e.get("value") for e in c.get("env", [])}
                    assert env.get("STARKMATTER_API_HOST") == "0.0.0.0", c["name"]
                    served.add(c["args"][0])
    assert served == {"api", "orders", "alerts", "worker", "beat"}


def test_the_api_trusts_forwarded_addresses_only_from_the_proxies_given(tmp_path: Path):
    # Behind an ingress, every client would otherwise be the ingress to the per-address
    # login and registration limits: one abuser would lock everyone out.
    def forwarded(values: list[Path]) -> str | None:
        (api,) = [o for o in render(values) if o["metadata"]["name"] == "sm-api"
                  and o["kind"] == "Deployment"]  # fmt: skip
        (container,) = api["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container["env"]}.get("FORWARDED_ALLOW_IPS")

    assert forwarded([]) == "127.0.0.1,::1"  # uvicorn's own default: no proxy
    given = tmp_path / "proxies.yaml"
    given.write_text(yaml.safe_dump({"api": {"trustedProxies": "10.42.0.0/16"}}))
    assert forwarded([given]) == "10.42.0.0/16"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"api": {"trustedProxies": "$(reboot)"}}))
    flags = ["-f", str(bad)]
    refused = subprocess.run(
        [str(testing.bin_dir() / "helm"), "template", "sm", str(CHART), *flags],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "trustedProxies" in refused.stderr


def test_prometheus_scrapes_only_metrics_ports_and_the_api_and_web_services_have_one():
    objects = render(VALUES["full"])
    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    for name in ("sm-api", "sm-web"):
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        # the process serves /metrics on STARKMATTER_METRICS_PORT, and the Service reaches it
        assert str(ports["metrics"]) == env["STARKMATTER_METRICS_PORT"], name
        targets = {p["name"]: p["targetPort"] for p in services[name]["spec"]["ports"]}
        assert targets == {"http": "http", "metrics": "metrics"}, name


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _admits(
    policies: list[dict[str, Any]],
    pod: dict[str, str],
    port: str,
    source: tuple[dict[str, str], dict[str, str]] | None,
) -> bool:
    """Whether the NetworkPolicies let ``source`` ((namespace labels, pod labels); None: an
    address outside the cluster) reach ``pod`` on the named ``port``."""
    selecting = [p for p in policies if _selects(p["spec"]["podSelector"], pod)]
    if not selecting:
        return True
    for policy in selecting:
        own = {"kubernetes.io/metadata.name": policy["metadata"]["namespace"]}
        for rule in policy["spec"].get("ingress") or []:
            if rule.get("ports") and port not in {p["port"] for p in rule["ports"]}:
                continue
            if not rule.get("from"):
                return True
            for peer in rule["from"]:
                assert "ipBlock" not in peer, peer
                if source is None:
                    continue
                namespace, labels = source
                if not _selects(peer.get("namespaceSelector", {"matchLabels": own}), namespace):
                    continue
                if _selects(peer.get("podSelector") or {}, labels):
                    return True
    return False


def test_network_policies_open_metrics_ports_only_to_prometheus_and_the_platforms_scrapers():
    objects = render(VALUES["full"])
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    pods = {
        o["metadata"]["name"]: (o["spec"]["template"]["metadata"]["labels"], spec)
        for o in objects
        for spec in pod_specs(o)
        if o["kind"] == "Deployment"
    }
    trading = {"kubernetes.io/metadata.name": "trading"}
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    prometheus = (monitoring, {"app.kubernetes.io/name": "prometheus"})
    neighbour = (trading, {"app": "something-else"})
    alerts = (trading, pods["sm-alerts"][0])
    operator = (trading, pods["sm-operator"][0])
    scraped = set()
    for name, (labels, spec) in pods.items():
        ports = {p["name"] for c in spec["containers"] for p in c.get("ports", [])}
        if "metrics" in ports:
            scraped.add(name)
            assert _admits(policies, labels, "metrics", prometheus), name
            assert not _admits(policies, labels, "metrics", None), name
            assert not _admits(policies, labels, "metrics", neighbour), name
        if "http" in ports:
            assert _admits(policies, labels, "http", None), name
    assert {"sm-api", "sm-web", "sm-orders", "sm-alerts", "sm-operator"} <= scraped
    api, web = pods["sm-api"][0], pods["sm-web"][0]
    assert _admits(policies, api, "metrics", alerts)  # HighLatency reads the API's p99
    assert not _admits(policies, web, "metrics", alerts)
    assert not _admits(policies, api, "metrics", operator)
    assert _admits(policies, pods["sm-alerts"][0], "metrics", operator)  # firing AlertRules


def test_operator_rbac_is_least_privilege():
    (role,) = [o for o in render([]) if o["kind"] == "ClusterRole"]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        # Cluster-wide, either would read every Secret or every pod's log in the cluster.
        assert "secrets" not in rule["resources"]
        assert "pods/log" not in rule["resources"]
        if "pods" in rule["resources"]:
            assert rule["verbs"] == ["list"]


def test_chart_crds_are_the_crds_of_crds_dir():
    for source in sorted((ROOT / "crds").glob("*.yaml")):
        assert (CHART / "crds" / source.name).read_text() == source.read_text(), (
            f"{source.name} drifted: run hack/kube/render-manifests.sh"
        )


def _without_render_noise(objects: list[Any]) -> list[Any]:
    """The secrets' checksum annotation changes with the random password of each render."""
    out = copy.deepcopy([o for o in objects if o])
    for obj in out:
        template = (obj.get("spec") or {}).get("template") or {}
        annotations = template.get("metadata", {}).get("annotations")
        if annotations and "checksum/secrets" in annotations:
            annotations["checksum/secrets"] = "GENERATED"
    return out


def test_plain_manifests_are_rendered_from_the_chart():
    rendered = helm(
        "template", "starkmatter", str(CHART), "--namespace", "starkmatter", "--skip-crds",
        "--set", "postgresql.bundled=true", "--set", "redisServer.bundled=true",
    )  # fmt: skip
    filtered = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "kube" / "drop_credential_secrets.py")],
        input=rendered, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    committed = (ROOT / "manifests" / "10-starkmatter.yaml").read_text()
    body = "\n".join(line for line in committed.splitlines() if not line.startswith("# "))
    assert yaml.safe_load_all(body) and _without_render_noise(
        list(yaml.safe_load_all(body))
    ) == _without_render_noise(list(yaml.safe_load_all(filtered))), (
        "manifests/ drifted from the chart: run make k8s-manifests"
    )
    crds = list(yaml.safe_load_all((ROOT / "manifests" / "00-crds.yaml").read_text()))
    sources = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    assert [c for c in crds if c] == sources


def test_committed_manifests_hold_no_credentials():
    """Passwords come from manifests/create-secrets.sh at install time, never from git."""
    text = "\n".join(p.read_text() for p in sorted((ROOT / "manifests").rglob("*.yaml")))
    objects = [o for o in yaml.safe_load_all(text) if o]
    assert not [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"]
    assert "starkmatter-dev" not in text and "requirepass" not in text
    assert not re.search(r"(postgresql|redis)://[^\s\"']*:[^\s\"'@]+@", text)


def test_samples_hold_one_valid_custom_resource_of_each_kind():
    kinds = sorted(
        yaml.safe_load(p.read_text())["kind"] for p in (ROOT / "manifests" / "samples").glob("*")
    )
    assert kinds == ["AlertRule", "MarketFeed", "NewsSource", "RetentionPolicy"]


def test_bundled_redis_requires_the_password_every_client_url_carries(tmp_path: Path):
    objects = render(VALUES["dev"])
    secrets = {o["metadata"]["name"]: o["stringData"] for o in objects if o["kind"] == "Secret"}
    (redis_set,) = [o for o in objects if o["metadata"]["name"] == "sm-redis" and
                    o["kind"] == "StatefulSet"]  # fmt: skip
    password = secrets["sm-redis-auth"]["password"]
    assert len(password) >= 32
    url = secrets["starkmatter-redis"]["url"]
    assert url == f"redis://:{password}@sm-redis:6379/0"
    # Every chart pod that talks to Redis reads that one Secret.
    readers = [
        env["valueFrom"]["secretKeyRef"]
        for o in objects for pod in pod_specs(o) for c in pod["containers"]
        for env in c.get("env", []) if env["name"].endswith("REDIS_URL")
    ]  # fmt: skip
    assert readers and all((r["name"], r["key"]) == ("starkmatter-redis", "url") for r in readers)
    # Start a real redis-server with the StatefulSet's own arguments and the Secret's file.
    pod = redis_set["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "auth"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "auth"]
    assert volume["secret"]["secretName"] == "sm-redis-auth"
    auth_dir = tmp_path / "auth"
    auth_dir.mkdir()
    (auth_dir / "auth.conf").write_text(secrets["sm-redis-auth"]["auth.conf"])
    args = [a.replace(mount["mountPath"], str(auth_dir)) for a in container["args"]]
    args = [str(tmp_path) if a == "/data" else a for a in args]
    assert password not in " ".join(args)
    port = testing.free_port()
    server = subprocess.Popen(
        [str(embedded.redis_server_binary()), *args, "--port", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=testing.die_with_parent,
    )  # fmt: skip
    try:
        local = url.replace("sm-redis:6379", f"127.0.0.1:{port}")
        with_password = redis.Redis.from_url(local)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert with_password.ping() is True
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with_password.set("k", "v")
        anonymous = redis.Redis(host="127.0.0.1", port=port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.get("k")
        with_password.close()
        anonymous.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_bundled_redis_password_can_be_given_as_a_value():
    objects = render(VALUES["dev"] + [HERE / "values-redis-password.yaml"])
    secrets = {o["metadata"]["name"]: o["stringData"] for o in objects if o["kind"] == "Secret"}
    assert secrets["sm-redis-auth"]["password"] == "s3cret/with:odd@chars"
    # Characters that mean something in a URL are escaped in the client URL.
    assert secrets["starkmatter-redis"]["url"] == (
        "redis://:s3cret%2Fwith%3Aodd%40chars@sm-redis:6379/0"
    )
    assert redis.connection.parse_url(secrets["starkmatter-redis"]["url"])["password"] == (
        "s3cret/with:odd@chars"
    )
