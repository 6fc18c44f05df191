"""No route makes FastAPI run its handler or a dependency in the thread pool.

FastAPI runs a plain `def` handler or dependency through `run_in_threadpool`: a trip to a
worker thread and back, each side waiting for a core and a turn of the event loop (tens
of ms per request on a busy server, before the handler starts). Everything a route needs
is `async def` (server/api/dependencies.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute

from server.app import create_app
from server.settings import Settings


def _routes(routes: list[Any]) -> Iterator[APIRoute | APIWebSocketRoute]:
    for route in routes:
        if isinstance(route, APIRoute | APIWebSocketRoute):
            yield route
        else:  # an included router (FastAPI keeps the original one), a mount
            inner = getattr(getattr(route, "original_router", None), "routes", None)
            yield from _routes(inner if inner is not None else getattr(route, "routes", []))


def _runs_on_the_loop(call: Any) -> bool:
    return (
        inspect.iscoroutinefunction(call)
        or inspect.isasyncgenfunction(call)
        or inspect.iscoroutinefunction(getattr(call, "__call__", None))
    )


def _threaded(dependant: Dependant) -> Iterator[str]:
    if dependant.call is not None and not _runs_on_the_loop(dependant.call):
        yield f"{dependant.call.__module__}.{dependant.call.__qualname__}"
    for inner in dependant.dependencies:
        yield from _threaded(inner)


def test_every_handler_and_dependency_runs_on_the_event_loop() -> None:
    app = create_app(Settings())
    routes = list(_routes(app.routes))
    assert len(routes) >= 60, [r.path for r in routes]  # the walk reached the routers
    threaded = {
        f"{route.path}: {name}" for route in routes for name in _threaded(route.dependant)
    }
    assert not threaded, sorted(threaded)
