"""As deployed, the alert evaluator's HighLatency scrape reaches the API's metrics, not itself.

Reads the plain install rendered from the chart (a cluster test fails when it drifts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _object(kind: str, name: str) -> dict[str, Any]:
    text = (ROOT / "manifests" / "10-starkmatter.yaml").read_text(encoding="utf-8")
    (found,) = [
        o for o in yaml.safe_load_all(text)
        if o and o["kind"] == kind and o["metadata"]["name"] == name
    ]  # fmt: skip
    assert isinstance(found, dict)
    return found


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container["env"]}


def test_the_alerts_deployment_scrapes_the_metrics_port_of_the_api_service() -> None:
    """The API serves /metrics only on its probe listener (STARKMATTER_METRICS_PORT), which
    the Service's metrics port reaches; its http port, the Ingress's, answers 404."""
    (alerts,) = _object("Deployment", "starkmatter-alerts")["spec"]["template"]["spec"][
        "containers"
    ]
    (api,) = _object("Deployment", "starkmatter-api")["spec"]["template"]["spec"]["containers"]
    service = _object("Service", "starkmatter-api")
    (metrics,) = [p for p in service["spec"]["ports"] if p["name"] == "metrics"]
    (target,) = [p for p in api["ports"] if p["name"] == metrics["targetPort"]]
    assert str(target["containerPort"]) == _env(api)["STARKMATTER_METRICS_PORT"]
    namespace = service["metadata"]["namespace"]
    assert _env(alerts)["STARKMATTER_ALERTS_METRICS_URL"] == (
        f"http://starkmatter-api.{namespace}.svc:{metrics['port']}/metrics"
    )
