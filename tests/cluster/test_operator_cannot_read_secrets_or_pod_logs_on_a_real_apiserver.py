"""The chart's RBAC, as the operator's own ServiceAccount token: no Secret and no pod log
anywhere, while an administrator reads the very same objects (so each refusal is RBAC's,
not a missing object's)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from starkmatter_operator import testing
from tests.cluster.conftest import OPERATOR_NS, RELEASE, wait_for

pytestmark = pytest.mark.timeout(180)

ACCOUNT = f"system:serviceaccount:{OPERATOR_NS}:{RELEASE}-operator"
LOG_LINE = "the operator has no business reading this"


def _restricted_namespace(cluster: testing.ControlPlane, name: str) -> None:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(namespace))


def _plain_pod(namespace: str, name: str) -> str:
    security = {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "busybox", "securityContext": security}],
        },
    }
    return yaml.safe_dump(pod)


def test_the_operator_token_is_refused_a_secret_that_an_admin_reads(
    cluster: testing.ControlPlane, operator_kubeconfig: Path
):
    namespace = f"unrelated-secrets-{os.getpid()}"
    _restricted_namespace(cluster, namespace)
    cluster.kubectl(
        "create", "secret", "generic", "bank-credentials", "-n", namespace,
        "--from-literal=password=hunter2",
    )  # fmt: skip
    assert cluster.get_json("secret", "bank-credentials", "-n", namespace)["data"]["password"]

    for args in (
        ["get", "secret", "bank-credentials", "-n", namespace],
        ["get", "secrets", "-n", namespace],
        ["get", "secrets", "--all-namespaces"],
        # Not even where the operator's own release lives.
        ["get", "secrets", "-n", OPERATOR_NS],
    ):
        refused = cluster.kubectl(*args, "-o", "json", kubeconfig=operator_kubeconfig, check=False)
        assert refused.returncode != 0, args
        assert "Forbidden" in refused.stderr and "hunter2" not in refused.stdout, refused.stderr
    for verb in ("get", "list", "watch"):
        answer = cluster.kubectl(
            "auth", "can-i", verb, "secrets", "--all-namespaces", f"--as={ACCOUNT}", check=False
        )
        assert answer.stdout.strip() == "no", verb


def test_the_operator_token_is_refused_a_pod_log_that_an_admin_reads(
    cluster: testing.ControlPlane, operator_kubeconfig: Path
):
    # kwok serves logs (like a kubelet) only in this namespace.
    namespace = testing.POD_LOGS_NAMESPACE
    _restricted_namespace(cluster, namespace)
    cluster.write_pod_log(LOG_LINE)
    name = f"someone-elses-app-{os.getpid()}"
    cluster.kubectl("apply", "-f", "-", input=_plain_pod(namespace, name))
    wait_for(
        lambda: cluster.get_json("pod", name, "-n", namespace)["status"].get("phase") == "Running",
        60,
        "the pod Running",
    )
    logs = wait_for(
        lambda: cluster.kubectl("logs", name, "-n", namespace, check=False).stdout, 30, "the log"
    )
    assert LOG_LINE in logs

    refused = cluster.kubectl(
        "logs", name, "-n", namespace, kubeconfig=operator_kubeconfig, check=False
    )
    assert refused.returncode != 0
    assert "Forbidden" in refused.stderr and LOG_LINE not in refused.stdout, refused.stderr
    answer = cluster.kubectl(
        "auth", "can-i", "get", "pods", "--subresource=log", "--all-namespaces",
        f"--as={ACCOUNT}", check=False,
    )  # fmt: skip
    assert answer.stdout.strip() == "no"
    # What it still has: listing pods, whose status carries termination messages and the
    # kubelet's waiting reasons.
    pods = cluster.kubectl(
        "get", "pods", "-n", namespace, "-o", "name", kubeconfig=operator_kubeconfig
    )
    assert f"pod/{name}" in pods.stdout
    cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=false")
