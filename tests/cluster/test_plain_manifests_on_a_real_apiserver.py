"""`kubectl apply -f manifests/` installs the platform, and every pod is admitted under
the restricted Pod Security profile that the manifests' namespace enforces."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

from starkmatter_operator import testing
from tests.cluster.conftest import wait_for

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def _create_secrets(cluster: testing.ControlPlane) -> str:
    env = {**os.environ, "KUBECTL": str(testing.bin_dir() / "kubectl"),
           "KUBECONFIG": str(cluster.kubeconfig)}  # fmt: skip
    done = subprocess.run(
        ["bash", str(MANIFESTS / "create-secrets.sh")], env=env, capture_output=True,
        text=True, check=True, timeout=60,
    )  # fmt: skip
    return done.stderr


def test_kubectl_apply_of_manifests_dir_installs_and_pods_are_admitted(
    cluster: testing.ControlPlane,
):
    assert "created" in _create_secrets(cluster)
    secrets = cluster.get_json("secrets", "-n", "starkmatter")["items"]
    data = {s["metadata"]["name"]: s["data"] for s in secrets}
    password = base64.b64decode(data["starkmatter-redis-auth"]["password"]).decode()
    assert len(password) == 32 and password.isalnum()
    redis_url = base64.b64decode(data["starkmatter-redis"]["url"]).decode()
    assert redis_url == f"redis://:{password}@starkmatter-redis:6379/0"
    pg = base64.b64decode(data["starkmatter-postgresql"]["password"]).decode()
    assert (
        pg != password
        and f":{pg}@" in base64.b64decode(data["starkmatter-database"]["url"]).decode()
    )
    assert "nothing changed" in _create_secrets(cluster)  # a second run keeps them
    cluster.kubectl("apply", "-f", str(MANIFESTS))
    deployments = cluster.get_json("deployments", "-n", "starkmatter")["items"]
    assert {d["metadata"]["name"] for d in deployments} >= {
        "starkmatter-api", "starkmatter-operator", "starkmatter-orders", "starkmatter-alerts",
    }  # fmt: skip

    def every_deployment_has_its_pods() -> bool:
        pods = cluster.get_json("pods", "-n", "starkmatter")["items"]
        owners = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods}
        return all(
            d["metadata"]["labels"]["app.kubernetes.io/component"] in owners for d in deployments
        )

    # A pod that broke the restricted profile would be refused by admission and never exist.
    wait_for(every_deployment_has_its_pods, 60, "pods admitted for every Deployment")
    cluster.kubectl("delete", "-f", str(MANIFESTS / "10-starkmatter.yaml"), "--wait=false")
