"""The OpenAPI 3 description of /api/v1, made from the routes as `ivr.web.api.endpoint` declares them:
their roles, the schemas of their parameters and bodies, their answers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

_REF = "#/components/schemas/{name}"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    role: str | None  # None: no log-in needed
    query: type[msgspec.Struct]  # path and query parameters
    body: type[msgspec.Struct] | None
    ok: int = 200
    errors: tuple[int, ...] = ()


def _error() -> dict[str, Any]:
    return {"$ref": "#/components/responses/Error"}


def _operation(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "summary": op.summary,
        "responses": {str(op.ok): {"description": "OK", "content": {"application/json": {
            "schema": {"type": "object"}}}}, "400": _error()},
    }
    if op.role is not None:
        answer["description"] = f"Needs the {op.role} role (log in at /login; the session cookie authenticates)."
        answer["security"] = [{"session": []}]
        answer["responses"].update({"401": _error(), "403": _error()})
    for status in op.errors:
        answer["responses"][str(status)] = _error()
    in_path = set(re.findall(r"\{(\w+)\}", op.path))
    properties = components[op.query.__name__].get("properties", {})
    required = set(components[op.query.__name__].get("required", ()))
    parameters = [{"name": name, "in": "path" if name in in_path else "query",
                   "required": name in in_path or name in required, "schema": schema}
                  for name, schema in properties.items()]
    if op.body is not None:
        answer["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": _REF.format(name=op.body.__name__)}}}}
        parameters.append({"name": "X-CSRF-Token", "in": "header", "required": True, "schema": {"type": "string"},
                           "description": "the session's CSRF token (GET /api/v1/me)"})
    if parameters:
        answer["parameters"] = parameters
    return answer


def document(operations: list[Operation]) -> dict[str, Any]:
    schemas = sorted({op.query for op in operations} | {op.body for op in operations if op.body},
                     key=lambda cls: cls.__name__)
    _, components = msgspec.json.schema_components(schemas, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, components)
    bodies = {op.body.__name__ for op in operations if op.body}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ivr contact-center API", "version": "1"},
        "components": {
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "ivr_session"}},
            "responses": {"Error": {"description": "what went wrong", "content": {"application/json": {
                "schema": {"type": "object", "required": ["error"],
                           "properties": {"error": {"type": "string"}}}}}}},
            "schemas": {name: schema for name, schema in components.items() if name in bodies},
        },
        "paths": paths,
    }
