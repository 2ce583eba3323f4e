"""Fixtures for the operator's unit tests (no API server)."""

from __future__ import annotations

import pytest

from starkmatter_operator import config


@pytest.fixture
def cfg() -> config.OperatorConfig:
    return config.OperatorConfig(image="registry.example/starkmatter:1.2.3")
