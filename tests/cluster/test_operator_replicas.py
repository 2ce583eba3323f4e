"""Two operator replicas: Kopf peering keeps one active, and the other takes over."""

from __future__ import annotations

import functools

import yaml

from starkmatter_operator import testing
from tests.cluster.conftest import OperatorProcess, wait_for
from tests.cluster.test_operator_on_a_real_apiserver import ready


def paused(process: OperatorProcess) -> bool:
    return "Pausing operations in favour of" in process.log_path.read_text(errors="replace")


def feed(namespace: str, name: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "starkmatter.io/v1alpha1",
            "kind": "MarketFeed",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"symbols": ["AAPL"], "gateway": {"replicas": 1}},
        }
    )


def test_second_replica_waits_and_takes_over_when_the_first_stops(
    cluster: testing.ControlPlane, operator: OperatorProcess, namespace: str
):
    second = OperatorProcess(cluster, operator.kubeconfig, operator.env)
    second.log_path = cluster.workdir / "operator-2.log"
    second.start()
    try:
        wait_for(lambda: paused(operator) or paused(second), 60, "one replica to pause")
        active, standby = (second, operator) if paused(operator) else (operator, second)
        assert not paused(active)
        cluster.kubectl("apply", "-f", "-", input=feed(namespace, "one"))
        wait_for(functools.partial(ready, cluster, "mf", namespace, "one"), 60, "one Ready")

        active.stop()  # graceful: it leaves the peering record, the standby resumes
        wait_for(
            lambda: "Resuming operations" in standby.log_path.read_text(errors="replace"),
            90,
            "standby to resume",
        )
        cluster.kubectl("apply", "-f", "-", input=feed(namespace, "two"))
        wait_for(functools.partial(ready, cluster, "mf", namespace, "two"), 60, "two Ready")
    finally:
        second.stop()
        if operator.proc is None or operator.proc.poll() is not None:
            operator.start()
