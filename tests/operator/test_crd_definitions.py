"""Static checks of crds/ (the apiserver tier checks that it accepts them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = sorted((ROOT / "crds").glob("*.starkmatter.io.yaml"))
# Short names of built-in resources (kubectl api-resources on a plain cluster).
BUILTIN_SHORT_NAMES = {
    "cm", "cs", "ep", "ev", "limits", "no", "ns", "pvc", "pv", "po", "rc", "quota", "sa",
    "svc", "crd", "crds", "ds", "deploy", "rs", "sts", "hpa", "cj", "csr", "ing", "netpol",
    "pdb", "pc", "sc", "ingclass", "eps", "vac", "rb", "crb", "cr", "role", "job",
}  # fmt: skip


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def walk(schema: dict[str, Any], path: str):
    for name, sub in (schema.get("properties") or {}).items():
        if name != "metadata":
            yield f"{path}.{name}", sub
            yield from walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield f"{path}[]", schema["items"]
        yield from walk(schema["items"], f"{path}[]")


def test_there_is_one_crd_per_kind():
    kinds = sorted(load(p)["spec"]["names"]["kind"] for p in CRDS)
    assert kinds == ["AlertRule", "MarketFeed", "NewsSource", "RetentionPolicy"]


@pytest.mark.parametrize("path", CRDS, ids=lambda p: p.name)
def test_every_field_has_a_description(path):
    schema = load(path)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    undocumented = [p for p, sub in walk(schema, "") if not sub.get("description")]
    assert undocumented == []


@pytest.mark.parametrize("path", CRDS, ids=lambda p: p.name)
def test_crd_has_status_subresource_printer_columns_category_and_free_short_names(path):
    crd = load(path)
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["group"] == "starkmatter.io"
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[0] == "Ready" and columns[-1] == "Age"
    assert crd["spec"]["names"]["categories"] == ["starkmatter"]
    assert not set(crd["spec"]["names"]["shortNames"]) & BUILTIN_SHORT_NAMES


def test_marketfeed_columns_make_kubectl_get_useful():
    crd = load(ROOT / "crds" / "marketfeeds.starkmatter.io.yaml")
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns[:4] == ["Ready", "Symbols", "Ticks/s", "Last Tick"]


@pytest.mark.parametrize("path", CRDS, ids=lambda p: p.name)
def test_every_list_and_string_a_cel_rule_walks_is_bounded(path):
    # The apiserver refuses rules whose estimated cost is unbounded.
    schema = load(path)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for where, sub in walk(schema["properties"]["spec"], "spec"):
        if sub.get("type") == "array":
            assert "maxItems" in sub, where
        if sub.get("type") == "string" and "enum" not in sub:
            assert "maxLength" in sub, where
