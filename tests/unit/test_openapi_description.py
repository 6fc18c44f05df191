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
