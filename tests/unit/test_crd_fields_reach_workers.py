"""Every spec field a worker reads exists in its CRD (the apiserver prunes unknown fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from starkmatter.ingest import worker
from starkmatter.ingest.providers import polling
from starkmatter.news import config as news_config
from starkmatter.retention import policies

CRDS = Path(__file__).resolve().parents[2] / "crds"


def _spec_schema(kind_file: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / kind_file).read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec: dict[str, Any] = schema["properties"]["spec"]
    return spec


def _aliases(model: type[pydantic.BaseModel], *, skip: set[str]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items() if name not in skip}


@pytest.mark.parametrize(
    ("crd_file", "path", "model", "skip"),
    [
        ("newssources.starkmatter.io.yaml", [], news_config.NewsSource, {"name"}),
        ("newssources.starkmatter.io.yaml", ["fieldMap"], news_config.FieldMap, set()),
        ("retentionpolicies.starkmatter.io.yaml", [], policies.Policy, {"name"}),
        ("retentionpolicies.starkmatter.io.yaml", ["archive"], policies.Archive, set()),
    ],
)
def test_worker_config_fields_are_declared_in_the_crd(
    crd_file: str, path: list[str], model: type[pydantic.BaseModel], skip: set[str]
) -> None:
    schema = _spec_schema(crd_file)
    for step in path:
        schema = schema["properties"][step]
    declared = set(schema["properties"])
    assert _aliases(model, skip=skip) - declared == set()


def test_retention_archive_formats_in_the_crd_are_the_ones_written() -> None:
    archive = _spec_schema("retentionpolicies.starkmatter.io.yaml")["properties"]["archive"]
    assert archive["properties"]["format"]["enum"] == ["jsonl.gz"]


class _ReadRecorder(dict[str, Any]):
    """An empty spec that notes every key read from it. A key the CRD declares as an
    object answers with another recorder, so nested reads (validation.*) are noted too."""

    def __init__(self, schema: dict[str, Any], prefix: str, seen: set[str]) -> None:
        super().__init__()
        self._schema, self._prefix, self._seen = schema, prefix, seen

    def _note(self, key: str) -> Any:
        self._seen.add(self._prefix + key)
        sub = (self._schema.get("properties") or {}).get(key) or {}
        if sub.get("type") == "object" and "properties" in sub:
            return _ReadRecorder(sub, f"{self._prefix}{key}.", self._seen)
        return None

    def get(self, key: str, default: Any = None) -> Any:
        found = self._note(key)
        return default if found is None else found

    def __getitem__(self, key: str) -> Any:
        found = self._note(key)
        if found is None:
            raise KeyError(key)
        return found

    def __contains__(self, key: object) -> bool:
        self._note(str(key))
        return False


def _declared(schema: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, sub in (schema.get("properties") or {}).items():
        out.add(prefix + key)
        out |= _declared(sub, f"{prefix}{key}.")
    return out


def test_every_marketfeed_field_the_ingest_worker_reads_is_declared_in_the_crd() -> None:
    schema = _spec_schema("marketfeeds.starkmatter.io.yaml")
    seen: set[str] = set()
    worker.FeedSpec.from_spec("feed", _ReadRecorder(schema, "", seen))
    # The recorder must really see the reads, or this test could never fail.
    assert {"provider", "symbols", "referencePrices", "fieldMapping", "path", "speed"} <= seen
    assert seen - _declared(schema) == set()


def test_every_provider_the_ingest_worker_builds_is_allowed_by_the_crd(tmp_path: Path) -> None:
    enum = _spec_schema("marketfeeds.starkmatter.io.yaml")["properties"]["provider"]["enum"]
    csv = tmp_path / "ticks.csv"
    csv.write_text("type,symbol,ts,price\n")
    extra = {"url": "wss://x", "path": str(csv)}
    for provider in enum:
        url = "https://x" if provider == "rest" else extra["url"]
        spec = worker.FeedSpec.from_spec("f", {**extra, "url": url, "provider": provider})
        assert worker.build_provider(spec) is not None


def test_every_field_mapping_key_the_crd_allows_is_understood_by_the_rest_poller() -> None:
    mapping = _spec_schema("marketfeeds.starkmatter.io.yaml")["properties"]["fieldMapping"]
    rule = mapping["x-kubernetes-validations"][0]["rule"]
    allowed = rule[rule.index("[") + 1 : rule.index("]")].replace("'", "").split(", ")
    assert len(allowed) > 3
    polling.FieldMapping.from_spec({key: "a.b" for key in allowed if key != "type"})
