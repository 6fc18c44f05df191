"""The OpenAPI description as the server really answers: refusal shapes and links.

Routes document their own refusals (`responses=`); what is shared lives here: the 400 of
a request naming another host, the 403 of a state-changing request from another site's
page (server/api/origins.py), the 422 answer (the error handler's `{"detail": str,
"errors": [...]}`, not FastAPI's default), the 503 of a server that is shutting down,
and OpenAPI links, which tell a client (and schemathesis' stateful tests) that the id a
call returns is what later calls take.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from server.api.schemas import ErrorResponse, InvalidRequestResponse

# FastAPI documents every route with parameters as answering this 422 shape, which the
# error handler (server/api/errors.py) never sends.
FASTAPI_VALIDATION_ERROR = "#/components/schemas/HTTPValidationError"
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")

RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def invalid_request(description: str) -> dict[int | str, dict[str, Any]]:
    """A route's 422: parameters out of range or a malformed body, with `description`."""
    return {422: {"model": InvalidRequestResponse, "description": description}}


ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}

# Any request naming a host the server does not answer to (server/api/hosts.py).
WRONG_HOST = {
    "description": "A Host header the server does not answer to (ALLOWED_HOSTS).",
    "content": ERROR_CONTENT,
}

# Any state-changing request from a page of another site (server/api/origins.py).
CROSS_SITE = (
    "A request from a page of another site (its Origin is neither this server's nor in "
    "CORS_ALLOW_ORIGINS, or the browser marks it cross-site)."
)
STATE_CHANGING_METHODS = ("post", "put", "patch", "delete")

SHUTTING_DOWN = {503: {"model": ErrorResponse, "description": "The server is shutting down."}}


def link(operation_id: str, description: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link to `operation_id`, its parameters taken from this answer
    (`$response.body#/session_id`)."""
    return {"operationId": operation_id, "parameters": parameters, "description": description}


def install_openapi(app: FastAPI) -> None:
    """Serve `app`'s OpenAPI description without FastAPI's default 422 answers.

    Each route that can answer 422 documents it (`invalid_request`); a route whose
    parameters cannot fail validation (a plain path id) answers no 422 at all.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path in schema.get("paths", {}).values():
                for method, operation in path.items():
                    responses = operation.get("responses", {})
                    responses.setdefault("400", WRONG_HOST)
                    if method in STATE_CHANGING_METHODS:
                        _add_cross_site(responses)
                    default = responses.get("422", {})
                    if _references(default, FASTAPI_VALIDATION_ERROR):
                        del responses["422"]
            components = schema.get("components", {}).get("schemas", {})
            for name in FASTAPI_VALIDATION_SCHEMAS:
                components.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_cross_site(responses: dict[str, Any]) -> None:
    """Document the cross-site 403 beside a route's own 403, if it has one."""
    own = responses.get("403")
    if own is None:
        responses["403"] = {"description": CROSS_SITE, "content": ERROR_CONTENT}
    elif CROSS_SITE not in own.get("description", ""):
        own["description"] = f"{own.get('description', '').rstrip()} Or {CROSS_SITE[0].lower()}{CROSS_SITE[1:]}".strip()


def _references(response: dict[str, Any], reference: str) -> bool:
    content = response.get("content", {}).get("application/json", {})
    return content.get("schema", {}).get("$ref") == reference
