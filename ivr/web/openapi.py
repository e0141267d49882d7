"""The OpenAPI 3 description of /api/v1 (tests check that it lists exactly the routes served)."""

from __future__ import annotations

from typing import Any


def _op(summary: str, role: str, *, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, ok: int = 200, errors: tuple[int, ...] = ()) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "description": f"Needs the {role} role (log in at /login; the session cookie authenticates).",
        "security": [{"session": []}],
        "responses": {
            str(ok): {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
            "400": {"$ref": "#/components/responses/Error"},
            "401": {"$ref": "#/components/responses/Error"},
            "403": {"$ref": "#/components/responses/Error"},
        },
    }
    if any(p["in"] == "path" for p in params or ()):
        errors = (404, *errors)
    for status in errors:
        operation["responses"][str(status)] = {"$ref": "#/components/responses/Error"}
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        operation["parameters"] = operation.get("parameters", []) + [
            {"name": "X-CSRF-Token", "in": "header", "required": True, "schema": {"type": "string"},
             "description": "the session's CSRF token (GET /api/v1/me)"}]
    return operation


def _path(name: str, kind: str = "integer") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}}


def _query(name: str, kind: str = "string", description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": description}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


_STRING, _INT, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
_AMI = (409, 502, 503)  # refused by Asterisk, failed on the way, no manager connection

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "ivr contact-center API", "version": "1"},
    "components": {
        "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "ivr_session"}},
        "responses": {"Error": {"description": "what went wrong", "content": {"application/json": {
            "schema": _object(["error"], error=_STRING)}}}},
    },
    "paths": {
        "/api/v1/me": {"get": _op("The logged-in user and the CSRF token", "agent")},
        "/api/v1/openapi.json": {"get": {"summary": "This description", "responses": {"200": {"description": "OK"}}}},
        "/api/v1/intents": {"get": _op("The call reasons (intents) and outcomes an agent can record", "agent")},
        "/api/v1/customers": {"get": _op("Find customers by phone number or name", "agent", params=[
            _query("q", description="a phone number in any form, or part of a name"),
            _query("limit", "integer")])},
        "/api/v1/customers/{id}": {"get": _op("A customer with roles and cases", "agent", params=[_path("id")])},
        "/api/v1/cases": {"get": _op("Cases of a customer or an organisation, newest first", "agent", params=[
            _query("customer_id", "integer", "give this or organisation_id"),
            _query("organisation_id", "integer"),
            _query("open", "boolean", "true: leave out closed, resolved and cancelled cases"),
            _query("status"), _query("limit", "integer")])},
        "/api/v1/cases/{id}": {"get": _op("A case", "agent", params=[_path("id")])},
        "/api/v1/cases/{id}/notes": {"post": _op(
            "Add a note to a case (agents: customers on their own calls)", "agent", params=[_path("id")],
            body=_object(["text"], text=_STRING), ok=201)},
        "/api/v1/calls": {"get": _op("Recent calls (agents: their own)", "agent", params=[
            _query("limit", "integer"), _query("queue"), _query("agent_id", "integer", "supervisors")])},
        "/api/v1/calls/{call_id}": {"get": _op("One call with its IVR context", "agent",
                                               params=[_path("call_id", "string")])},
        "/api/v1/calls/{call_id}/disposition": {"post": _op(
            "Record the real reason and the outcome of a call", "agent", params=[_path("call_id", "string")],
            body=_object(["intent", "outcome"], intent=_STRING, outcome={
                "type": "string", "enum": ["resolved", "follow_up", "transferred", "callback", "complaint",
                                           "other"]}))},
        "/api/v1/predictions": {"get": _op("How often the predicted reason was right", "supervisor")},
        "/api/v1/queues": {"get": _op("Live queues, agents and statistics (the wallboard)", "supervisor")},
        "/api/v1/agents": {"get": _op("Agents and their queue memberships", "supervisor")},
        "/api/v1/actions/pause": {"post": _op("Pause or unpause a member (AMI QueuePause)", "supervisor", errors=_AMI, body=_object(
            ["interface"], interface=_STRING, paused=_BOOL, reason=_STRING, queue=_STRING))},
        "/api/v1/actions/add": {"post": _op("Add a member to a queue (AMI QueueAdd)", "supervisor", errors=_AMI, body=_object(
            ["queue", "interface"], queue=_STRING, interface=_STRING, penalty=_INT, name=_STRING))},
        "/api/v1/actions/remove": {"post": _op("Remove a member from a queue (AMI QueueRemove)", "supervisor", errors=_AMI,
                                               body=_object(["queue", "interface"], queue=_STRING,
                                                            interface=_STRING))},
        "/api/v1/actions/penalty": {"post": _op("Change a member's penalty (AMI QueuePenalty)", "supervisor", errors=_AMI,
                                                body=_object(["interface", "penalty"], interface=_STRING,
                                                             penalty=_INT, queue=_STRING))},
    },
}
