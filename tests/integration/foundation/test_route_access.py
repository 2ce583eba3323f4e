"""Every endpoint declares who may call it: public, or a role."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import fastapi
from fastapi import routing
from starlette.routing import BaseRoute

from starkmatter.api import app as api_app
from starkmatter.api import deps
from starkmatter.core import settings


def _dependency_calls(dependant: object) -> list[object]:
    calls: list[object] = []
    for sub in getattr(dependant, "dependencies", []):
        calls.append(sub.call)
        calls.extend(_dependency_calls(sub))
    return calls


def _api_routes(routes: Sequence[BaseRoute]) -> Iterator[routing.APIRoute]:
    """Every endpoint, including those of included routers (which FastAPI lists as one
    entry each, holding the router they include)."""
    for route in routes:
        if isinstance(route, routing.APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)


def test_every_route_is_either_public_or_requires_a_role(config: settings.Settings) -> None:
    app: fastapi.FastAPI = api_app.create_app(config)
    undeclared = []
    checked = set()
    for route in _api_routes(app.routes):
        checked.add((route.path, *sorted(route.methods or ())))
        calls = _dependency_calls(route.dependant)
        public = deps.public in calls
        roles = any(hasattr(call, "required_roles") for call in calls)
        if public == roles:  # neither, or contradictory
            undeclared.append(f"{sorted(route.methods or ())} {route.path}")
    assert undeclared == []
    # the walk reached the component routers, not only the app's own documentation routes
    assert {("/orders", "POST"), ("/auth/login", "POST"), ("/healthz", "GET")} <= checked
