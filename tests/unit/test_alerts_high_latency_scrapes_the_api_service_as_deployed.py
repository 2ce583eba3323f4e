"""As deployed, the alert evaluator's HighLatency scrape reaches the API, not itself.

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


def test_the_alerts_deployment_scrapes_the_metrics_of_the_api_service() -> None:
    alerts = _object("Deployment", "starkmatter-alerts")
    (container,) = alerts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    api = _object("Service", "starkmatter-api")
    port = api["spec"]["ports"][0]["port"]
    namespace = api["metadata"]["namespace"]
    assert env["STARKMATTER_ALERTS_METRICS_URL"] == (
        f"http://starkmatter-api.{namespace}.svc:{port}/metrics"
    )
