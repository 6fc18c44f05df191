"""/health says the process serves; /ready says whether it can take sessions now."""

from __future__ import annotations

import httpx


async def test_a_started_server_is_ready(http: httpx.AsyncClient) -> None:
    response = await http.get("/ready")
    assert response.status_code == 200, response.text
    # MAX_SESSIONS unset: the sessions that fit the test budget all speaking (the render
    # worker's 0.75 / 2 ms = 375 frames/s over 10 frames/s each).
    assert response.json() == {"status": "ready", "engine": "demo", "sessions": 0, "max_sessions": 37}


async def test_a_dead_render_worker_makes_it_unready_but_alive(http: httpx.AsyncClient) -> None:
    server = http.app.state.server  # type: ignore[attr-defined]
    server.worker.close()
    server.worker.join(5)
    response = await http.get("/ready")
    assert response.status_code == 503
    assert "render worker" in response.json()["detail"]
    assert (await http.get("/health")).status_code == 200


async def test_a_closing_server_is_unready(http: httpx.AsyncClient) -> None:
    await http.app.state.server.close()  # type: ignore[attr-defined]
    response = await http.get("/ready")
    assert response.status_code == 503
    assert "shutting down" in response.json()["detail"]


async def test_health_keeps_its_fields(http: httpx.AsyncClient) -> None:
    body = (await http.get("/health")).json()
    assert body["status"] == "ok"
    assert {"engine", "engine_reason", "sessions", "max_sessions", "avatars", "worker"} <= body.keys()
