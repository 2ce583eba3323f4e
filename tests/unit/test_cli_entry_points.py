"""Every entry point that a manifest or the operator runs exists in the `starkmatter` CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from starkmatter import cli
from starkmatter_operator import config as operator_config
from starkmatter_operator.builders import marketfeed, newssource, retentionpolicy

REPO = Path(__file__).resolve().parents[2]


def _parses(args: list[str]) -> str:
    parser, handlers = cli.build_parser()
    namespace = parser.parse_args(args)
    assert namespace.command in handlers
    return str(namespace.command)


def _containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    spec = manifest.get("spec") or {}
    template = spec.get("jobTemplate", {}).get("spec", spec).get("template") or {}
    pod = template.get("spec") or {}
    return list(pod.get("containers") or [])


def _platform_args(manifests: list[dict[str, Any]]) -> list[list[str]]:
    found = []
    for manifest in manifests:
        for container in _containers(manifest):
            platform_image = "starkmatter/starkmatter" in str(container.get("image"))
            if platform_image and "command" not in container and container.get("args"):
                found.append([str(a) for a in container["args"]])
    return found


@pytest.mark.parametrize(
    "args",
    [
        ["dev"],
        ["api"],
        ["gateway"],
        ["orders"],
        ["ingest", "--feed", "equities"],
        ["simulate", "--rate", "50"],
        ["news", "--source", "wire", "--once"],
        ["alerts"],
        ["archive", "--policy", "default", "--dry-run"],
        ["worker"],
        ["beat"],
        ["migrate"],
        ["audit-verify"],
    ],
)
def test_design_entry_point_is_a_cli_command(args: list[str]) -> None:
    assert _parses(args) == args[0]


def test_every_container_in_the_plain_manifests_runs_a_real_command() -> None:
    documents = [
        doc
        for path in sorted((REPO / "manifests").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    commands = {_parses(args) for args in _platform_args(documents)}
    assert {"api", "orders", "worker", "beat", "alerts"} <= commands


@pytest.mark.parametrize(
    ("module", "sample"),
    [
        (marketfeed, "marketfeed.yaml"),
        (newssource, "newssource.yaml"),
        (retentionpolicy, "retentionpolicy.yaml"),
    ],
)
def test_operator_children_run_real_commands(module: Any, sample: str) -> None:
    body = yaml.safe_load((REPO / "manifests" / "samples" / sample).read_text())
    body.setdefault("metadata", {}).setdefault("uid", "00000000-0000-0000-0000-000000000001")
    body["metadata"].setdefault("namespace", "default")
    children = module.build(body, operator_config.OperatorConfig.from_env({}))
    args = _platform_args(children)
    assert args, "the builder produced no platform container"
    for each in args:
        _parses(each)
