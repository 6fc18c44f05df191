"""The OpenAPI description says what the server really answers (tests/fuzz checks it all)."""

from __future__ import annotations

import httpx

from server.api.schemas import BusyResponse, InvalidRequestResponse

SESSION_CALLS = {"get_session", "offer", "ice_candidate", "stream", "delete_session"}


async def _description(http: httpx.AsyncClient) -> dict:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


async def test_no_operation_documents_fastapis_default_422_shape(http: httpx.AsyncClient) -> None:
    description = await _description(http)
    assert "HTTPValidationError" not in str(description)
    create = description["paths"]["/webrtc/sessions/create"]["post"]["responses"]["422"]
    assert create["content"]["application/json"]["schema"]["$ref"].endswith("/InvalidRequestResponse")


async def test_a_parameter_out_of_range_is_answered_in_the_documented_422_shape(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/webrtc/sessions/create", params={"fps": 0})
    assert response.status_code == 422
    answer = InvalidRequestResponse.model_validate(response.json())
    assert "fps" in answer.detail
    assert answer.errors and answer.errors[0].loc == ["query", "fps"]


async def test_the_409_without_a_client_fits_the_documented_409(http: httpx.AsyncClient) -> None:
    session_id = (await http.post("/webrtc/sessions/create")).json()["session_id"]
    response = await http.post(
        f"/webrtc/sessions/{session_id}/stream", files={"audio_file": ("a.wav", b"x", "audio/wav")}
    )
    assert response.status_code == 409
    assert "retry_after_seconds" not in response.json()
    BusyResponse.model_validate(response.json())
    description = await _description(http)
    documented = description["components"]["schemas"]["BusyResponse"]
    assert documented["required"] == ["detail"]


async def test_create_links_every_call_on_the_session(http: httpx.AsyncClient) -> None:
    description = await _description(http)
    links = description["paths"]["/webrtc/sessions/create"]["post"]["responses"]["200"]["links"]
    assert {link["operationId"] for link in links.values()} == SESSION_CALLS
    assert all(
        link["parameters"] == {"session_id": "$response.body#/session_id"} for link in links.values()
    )


async def test_every_state_changing_operation_documents_the_cross_site_403(http: httpx.AsyncClient) -> None:
    """Any POST, PUT, PATCH or DELETE from another site's page is refused with 403
    (server/api/origins.py): each operation says so, beside its own 403 if it has one."""
    description = await _description(http)
    operations = [
        (path, method, operation)
        for path, item in description["paths"].items()
        for method, operation in item.items()
        if method in ("post", "put", "patch", "delete")
    ]
    assert len(operations) > 20
    for path, method, operation in operations:
        refusal = operation["responses"].get("403")
        assert refusal is not None and "another site" in refusal["description"], (method, path)
    own = description["paths"]["/avatars/{avatar_id}"]["delete"]["responses"]["403"]["description"]
    assert own.startswith("The built-in avatar.")  # the route's own 403 is kept

    refused = await http.delete("/webrtc/sessions/nope", headers={"Origin": "https://elsewhere.example"})
    assert refused.status_code == 403
    assert "elsewhere.example" in refused.json()["detail"]
