"""Every entry point that a manifest or the operator runs exists in the `starkmatter` CLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from starkmatter import cli
from starkmatter.core import settings
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


_SECRET_STAND_INS = {
    "STARKMATTER_DATABASE_URL": "postgresql://u:p@db.invalid:5432/sm",
    "STARKMATTER_REDIS_URL": "redis://:p@redis.invalid:6379/0",
}


@pytest.mark.parametrize(
    ("module", "sample"),
    [
        (marketfeed, "marketfeed.yaml"),
        (newssource, "newssource.yaml"),
        (retentionpolicy, "retentionpolicy.yaml"),
    ],
)
def test_operator_children_get_every_setting_their_command_needs_to_start(
    module: Any, sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI refuses to start outside dev mode without its servers; a child the operator
    builds must carry them (values from Secrets stand in as plausible URLs)."""
    body = yaml.safe_load((REPO / "manifests" / "samples" / sample).read_text())
    body.setdefault("metadata", {}).setdefault("uid", "00000000-0000-0000-0000-000000000001")
    body["metadata"].setdefault("namespace", "default")
    children = module.build(body, operator_config.OperatorConfig.from_env({}))
    _each_starts(children, monkeypatch)


def test_chart_pods_get_every_setting_their_command_needs_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    documents = [
        doc for doc in yaml.safe_load_all((REPO / "manifests" / "10-starkmatter.yaml").read_text())
        if doc
    ]  # fmt: skip
    _each_starts(documents, monkeypatch)


def _each_starts(manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    containers = [
        c
        for m in manifests
        for c in _containers(m)
        if c.get("args") and "command" not in c and "starkmatter/starkmatter" in str(c.get("image"))
    ]
    assert containers
    for container in containers:
        for name in [k for k in os.environ if k.startswith("STARKMATTER_")]:
            monkeypatch.delenv(name)
        for env in container.get("env") or []:
            value = env.get("value")
            if value is None:
                value = _SECRET_STAND_INS.get(env["name"], "stand-in")
            monkeypatch.setenv(env["name"], value)
        loaded = settings.for_command(container["args"][0])
        assert loaded.env == "prod", container["name"]


def test_each_command_names_its_database_and_redis_clients_unless_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STARKMATTER_ENV", "dev")
    monkeypatch.delenv("STARKMATTER_SERVICE_NAME", raising=False)
    assert settings.for_command("orders").service_name == "orders"
    assert settings.for_command("gateway").service_name == "gateway"
    monkeypatch.setenv("STARKMATTER_SERVICE_NAME", "orders-blue")
    assert settings.for_command("orders").service_name == "orders-blue"
