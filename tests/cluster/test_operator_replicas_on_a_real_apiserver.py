"""Two operator replicas against a real apiserver: Kopf peering keeps exactly one active.

Every wait is on an observable condition (the peering record, a CR's status, a replica's
own reconcile counter), with generous timeouts and no timing asserts: on a loaded machine
the hand-over only takes longer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from starkmatter_operator import testing
from tests.cluster.conftest import OperatorProcess, wait_for

# Generous: waits are on conditions, and a loaded machine only makes them longer.
pytestmark = pytest.mark.timeout(600)

PEERING = "it-handover"
# Short, so that the standby notices a dead peer within seconds rather than a minute.
LIFETIME_S = 10


def feed(namespace: str, name: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "starkmatter.io/v1alpha1",
            "kind": "MarketFeed",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"symbols": ["AAPL"], "ingest": {"replicas": 0}, "gateway": {"replicas": 1}},
        }
    )


def ready_generation(cluster: testing.ControlPlane, namespace: str, name: str) -> Any:
    found = cluster.kubectl("get", "mf", name, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    obj = json.loads(found.stdout)
    status = obj.get("status") or {}
    ready = any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
    )
    current = status.get("observedGeneration") == obj["metadata"]["generation"]
    return obj if ready and current else None


def peers(cluster: testing.ControlPlane) -> dict[str, Any]:
    record = cluster.get_json("clusterkopfpeering", PEERING)
    return dict(record.get("status") or {})


@pytest.fixture
def replicas(
    cluster: testing.ControlPlane, operator: OperatorProcess, operator_kubeconfig: Path
) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    # The session's replica works cluster-wide too: it must not be the one that acts here.
    operator.stop()
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": PEERING},
            }
        ),
    )

    def replica(name: str, priority: int) -> OperatorProcess:
        env = {
            "STARKMATTER_OPERATOR_PRIORITY": str(priority),
            "STARKMATTER_OPERATOR_PEERING_LIFETIME": str(LIFETIME_S),
        }
        return OperatorProcess(cluster, operator_kubeconfig, env, name=name, peering=PEERING)

    high, low = replica("replica-high", 200), replica("replica-low", 100)
    try:
        high.start()
        low.start()
        yield high, low
    finally:
        low.stop()
        high.stop()
        cluster.kubectl("delete", "clusterkopfpeering", PEERING, "--wait=false", check=False)
        operator.start()


def test_only_the_replica_with_priority_acts_and_the_other_takes_over_when_it_dies(
    cluster: testing.ControlPlane,
    replicas: tuple[OperatorProcess, OperatorProcess],
    namespace: str,
) -> None:
    high, low = replicas

    # Both replicas have announced themselves in the shared peering record.
    def both_announced() -> bool:
        return sorted(int(p["priority"]) for p in peers(cluster).values()) == [100, 200]

    wait_for(both_announced, 120, "both replicas in the peering record")

    cluster.kubectl("apply", "-f", "-", input=feed(namespace, "before-failover"))
    wait_for(
        lambda: ready_generation(cluster, namespace, "before-failover"), 120, "first feed Ready"
    )
    assert high.reconciles() > 0, high.log_tail()
    assert low.reconciles() == 0, low.log_tail()
    assert cluster.get_json("deployment", "before-failover-gateway", "-n", namespace)

    # The active replica dies without a word (no clean-up of its peering record).
    high.stop(kill=True)
    cluster.kubectl("apply", "-f", "-", input=feed(namespace, "after-failover"))
    taken_over = wait_for(
        lambda: ready_generation(cluster, namespace, "after-failover"),
        240,
        f"second feed Ready after the hand-over; standby log:\n{low.log_tail()}",
    )
    assert low.reconciles() > 0
    assert "Resuming operations" in low.log_path.read_text()
    assert cluster.get_json("deployment", "after-failover-gateway", "-n", namespace)
    (owner,) = cluster.get_json("configmap", "after-failover-feed", "-n", namespace)["metadata"][
        "ownerReferences"
    ]
    assert owner["uid"] == taken_over["metadata"]["uid"]
    # The dead replica's record expired and was cleaned up: only the survivor is left.
    wait_for(
        lambda: [int(p["priority"]) for p in peers(cluster).values()] == [100],
        120,
        "dead replica removed from the peering record",
    )
