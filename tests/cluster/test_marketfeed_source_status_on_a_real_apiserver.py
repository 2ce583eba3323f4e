"""A csv MarketFeed whose spec.source is missing says so in its own status and Events
(the kubelet would tell only the pod), and recovers by itself once the object appears.

The operator runs as the chart's ServiceAccount, so these tests also show that the chart's
RBAC lets it read exactly what it needs: a ConfigMap and a PersistentVolumeClaim by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from starkmatter_operator import testing
from tests.cluster.conftest import OPERATOR_NS, RELEASE, wait_for

SAMPLE = Path(__file__).with_name("marketfeed-csv-backfill.yaml")
FEED = "aapl-backfill"


def _sample() -> tuple[dict[str, Any], dict[str, Any]]:
    config_map, feed = (o for o in yaml.safe_load_all(SAMPLE.read_text()) if o)
    return config_map, feed


def _apply(cluster: testing.ControlPlane, namespace: str, *objects: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def _feed(cluster: testing.ControlPlane, namespace: str) -> Any:
    result = cluster.kubectl("get", "mf", FEED, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _condition(feed: Any, kind: str) -> dict[str, Any]:
    conds = ((feed or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == kind), {})


def _source_reason(cluster: testing.ControlPlane, namespace: str, reason: str) -> Any:
    """The feed once SourceReady has this reason for its current spec (a status-only
    refresh that runs before the spec's first reconcile reports an older generation)."""
    feed = _feed(cluster, namespace)
    source = _condition(feed, "SourceReady")
    current = source.get("observedGeneration") == feed["metadata"]["generation"]
    return feed if current and source.get("reason") == reason else None


def _ready(cluster: testing.ControlPlane, namespace: str) -> Any:
    feed = _feed(cluster, namespace)
    return feed if _condition(feed, "Ready").get("status") == "True" else None


def _events(cluster: testing.ControlPlane, namespace: str, reason: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.kind=MarketFeed,involvedObject.name={FEED},reason={reason}"
    answer = cluster.get_json("events", "-n", namespace, "--field-selector", selector)
    return list(answer["items"])


def _assert_blocked(
    cluster: testing.ControlPlane, namespace: str, reason: str, names: str
) -> dict[str, Any]:
    """The feed reports the missing source in the API convention, and the operator has
    withheld the ingest pod that could not start anyway."""
    feed = wait_for(lambda: _source_reason(cluster, namespace, reason), 60, reason)
    generation = feed["metadata"]["generation"]
    assert feed["status"]["observedGeneration"] == generation
    source = _condition(feed, "SourceReady")
    assert source["status"] == "False"
    assert source["observedGeneration"] == generation
    assert source["lastTransitionTime"]
    assert names in source["message"]
    assert _condition(feed, "Ready")["status"] == "False"
    degraded = _condition(feed, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", reason)
    ingest = cluster.kubectl("get", "deployment", f"{FEED}-ingest", "-n", namespace, check=False)
    assert ingest.returncode != 0, ingest.stdout
    (event,) = wait_for(lambda: _events(cluster, namespace, reason), 30, f"{reason} Event")
    assert event["type"] == "Warning"
    assert names in event["message"]
    return dict(feed)


@pytest.mark.timeout(180)
def test_missing_config_map_then_missing_key_show_in_status_and_clear_when_fixed(
    cluster: testing.ControlPlane, operator: Any, namespace: str
):
    config_map, feed = _sample()
    _apply(cluster, namespace, feed)
    _assert_blocked(
        cluster, namespace, "ConfigMapNotFound", f"ConfigMap {namespace}/aapl-2024-01-02"
    )
    # What the feed owner reads, without knowing that a pod would have had the event.
    described = cluster.kubectl("describe", "mf", FEED, "-n", namespace).stdout
    assert "SourceReady" in described and "ConfigMapNotFound" in described
    table = cluster.kubectl("get", "mf", FEED, "-n", namespace, "--no-headers").stdout
    assert table.split()[1] == "False"

    wrong_key = {**config_map, "data": {"msft.csv": config_map["data"]["aapl.csv"]}}
    _apply(cluster, namespace, wrong_key)
    _assert_blocked(cluster, namespace, "ConfigMapKeyNotFound", "no key 'aapl.csv'")

    # Neither the MarketFeed nor anything the operator watches changes: it looks again.
    _apply(cluster, namespace, config_map)
    fixed = wait_for(lambda: _source_reason(cluster, namespace, "SourceFound"), 60, "found")
    source = _condition(fixed, "SourceReady")
    assert source["status"] == "True"
    assert source["message"] == f"ConfigMap {namespace}/aapl-2024-01-02 has key 'aapl.csv'"
    ready = wait_for(lambda: _ready(cluster, namespace), 60, "feed Ready after the fix")
    assert _condition(ready, "Degraded")["status"] == "False"
    assert ready["status"]["observedGeneration"] == ready["metadata"]["generation"]
    (event,) = wait_for(lambda: _events(cluster, namespace, "SourceFound"), 30, "SourceFound")
    assert event["type"] == "Normal"
    assert operator.healthy()


@pytest.mark.timeout(180)
def test_missing_claim_shows_in_status_and_clears_when_the_claim_is_bound(
    cluster: testing.ControlPlane,
    operator: Any,
    namespace: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
):
    _, feed = _sample()
    feed["spec"]["source"] = {
        "persistentVolumeClaim": {"claimName": "backfills", "subPath": "2024-01/aapl.csv"}
    }
    _apply(cluster, namespace, feed)
    _assert_blocked(
        cluster, namespace, "ClaimNotFound", f"PersistentVolumeClaim {namespace}/backfills"
    )

    volume = f"{namespace}-files"
    request.addfinalizer(lambda: cluster.kubectl("delete", "pv", volume, "--wait=false"))
    _apply(
        cluster,
        namespace,
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
                  "storageClassName": "", "hostPath": {"path": str(tmp_path)}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": "backfills", "namespace": namespace},
         "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": volume,
                  "resources": {"requests": {"storage": "1Gi"}}}},
    )  # fmt: skip
    fixed = wait_for(lambda: _source_reason(cluster, namespace, "SourceFound"), 60, "bound")
    assert _condition(fixed, "SourceReady")["message"] == (
        f"PersistentVolumeClaim {namespace}/backfills is Bound"
    )
    wait_for(lambda: _ready(cluster, namespace), 60, "feed on the claim Ready")
    assert operator.healthy()


@pytest.mark.parametrize(
    ("verb", "allowed"), [("get", "yes"), ("list", "no"), ("watch", "no"), ("update", "no")]
)
def test_chart_lets_the_operator_get_claims_and_nothing_more(
    cluster: testing.ControlPlane, operator_kubeconfig: Path, verb: str, allowed: str
):
    account = f"system:serviceaccount:{OPERATOR_NS}:{RELEASE}-operator"
    answer = cluster.kubectl(
        "auth", "can-i", verb, "persistentvolumeclaims", "--all-namespaces", f"--as={account}",
        check=False,
    )  # fmt: skip
    assert answer.stdout.strip() == allowed
