"""`kubectl apply -f manifests/` installs the platform, and every pod is admitted under
the restricted Pod Security profile that the manifests' namespace enforces."""

from __future__ import annotations

from pathlib import Path

from starkmatter_operator import testing
from tests.cluster.conftest import wait_for

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def test_kubectl_apply_of_manifests_dir_installs_and_pods_are_admitted(
    cluster: testing.ControlPlane,
):
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
