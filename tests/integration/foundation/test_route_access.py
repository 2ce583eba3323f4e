"""Every endpoint declares who may call it: public, or a role."""

from __future__ import annotations

import fastapi
from fastapi import routing

from starkmatter.api import app as api_app
from starkmatter.api import deps
from starkmatter.core import settings


def _dependency_calls(dependant: object) -> list[object]:
    calls: list[object] = []
    for sub in getattr(dependant, "dependencies", []):
        calls.append(sub.call)
        calls.extend(_dependency_calls(sub))
    return calls


def test_every_route_is_either_public_or_requires_a_role(config: settings.Settings) -> None:
    app: fastapi.FastAPI = api_app.create_app(config)
    undeclared = []
    for route in app.routes:
        if not isinstance(route, routing.APIRoute):
            continue
        calls = _dependency_calls(route.dependant)
        public = deps.public in calls
        roles = any(hasattr(call, "required_roles") for call in calls)
        if public == roles:  # neither, or contradictory
            undeclared.append(f"{sorted(route.methods or ())} {route.path}")
    assert undeclared == []
