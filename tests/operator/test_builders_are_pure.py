"""The builders and the rules they apply do no I/O: they import nothing that could."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "starkmatter_operator"
PURE = [*sorted((PACKAGE / "builders").glob("*.py")), PACKAGE / "validation.py",
        PACKAGE / "conditions.py", PACKAGE / "sources.py"]  # fmt: skip
ALLOWED = {
    "__future__", "collections", "dataclasses", "datetime", "decimal", "hashlib", "json",
    "re", "typing", "starkmatter_operator.config", "starkmatter_operator.validation",
    "starkmatter_operator.builders", "starkmatter_operator.builders.common",
    "collections.abc",
}  # fmt: skip


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.name)
def test_pure_module_imports_no_io(path: Path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported |= {f"{node.module}.{a.name}" if node.module == "starkmatter_operator"
                         else node.module for a in node.names}  # fmt: skip
    assert imported <= ALLOWED, imported - ALLOWED
