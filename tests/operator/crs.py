"""Custom resources for the operator's unit tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from starkmatter_operator import config

ROOT = Path(__file__).resolve().parents[2]


def make_cr(kind: str, spec: dict[str, Any], name: str = "demo", namespace: str = "trading"):
    return {
        "apiVersion": config.API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
        "spec": spec,
    }


def sample(kind: str) -> dict[str, Any]:
    body = yaml.safe_load((ROOT / "manifests" / "samples" / f"{kind.lower()}.yaml").read_text())
    body["metadata"].update(namespace="trading", uid="uid-sample", generation=1)
    return dict(body)


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]
