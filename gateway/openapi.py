"""The OpenAPI 3.1 document, generated from the routers' declarations (never hand-written).

Request bodies and query parameters use their pydantic models' validation schema, replies the serialization
schema of the route's `response` (a model, or any type such as `list[Model]`). Every operation lists the problem
replies the platform can give it: 400 and 500 always, 401 (a bad token is refused everywhere), 403 for non-public
routes, 404 with path parameters, 409/413/422 for POSTs, 422 with a query, and 429 (rate limits) everywhere.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter

from services.kernel.http import PUBLIC, RouteDef
from services.kernel.idempotency import KEYED_METHODS

REF = "#/components/schemas/{model}"

PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}

IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Same key and body within 24 h: the stored reply is returned again and the work is not redone; "
    "the same key with another body: 422. Scoped per user.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
}

_PATH_PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")


def _schemas(routes: list[RouteDef]) -> tuple[dict[tuple[int, str], dict[str, Any]], dict[str, Any]]:
    """JSON schemas of every body/query/response type, with one shared, collision-free `$defs`."""
    inputs = []
    for i, r in enumerate(routes):
        if r.body is not None:
            inputs.append(((i, "body"), "validation", TypeAdapter(r.body)))
        if r.response is not None and not r.raw:
            inputs.append(((i, "response"), "serialization", TypeAdapter(r.response)))
    if not inputs:
        return {}, {}
    by_key, defs = TypeAdapter.json_schemas(inputs, ref_template=REF)
    return {k[0]: v for k, v in by_key.items()}, dict(defs.get("$defs", {}))


def _problem() -> dict[str, Any]:
    return {
        "description": "problem",
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def build_openapi(
    routes: list[RouteDef], system: list[dict[str, Any]], title: str, version: str
) -> dict[str, Any]:
    by_route, schemas = _schemas(routes)
    schemas["Problem"] = PROBLEM_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(routes):
        path = _PATH_PARAM.sub(r"{\1}", r.path)
        op: dict[str, Any] = {
            "operationId": r.operation_id,
            "summary": r.summary or r.operation_id,
            "tags": [r.service],
            "x-policy": r.policy.describe(),
            **({"x-owner": r.owner} if r.owner else {}),
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in _PATH_PARAM.findall(r.path)
            ],
            "responses": {},
        }
        if r.query is not None:
            for name, f in r.query.model_fields.items():
                schema = TypeAdapter(f.annotation).json_schema(ref_template=REF)
                for dname, d in schema.pop("$defs", {}).items():
                    schemas.setdefault(dname, d)
                op["parameters"].append(
                    {
                        "name": f.alias or name,
                        "in": "query",
                        "required": f.is_required(),
                        "schema": schema,
                        "description": f.description or "",
                    }
                )
        if r.method in KEYED_METHODS:
            op["parameters"].append(IDEMPOTENCY_HEADER)
        if r.body is not None:
            media: dict = {"schema": by_route[(i, "body")]}
            if r.example is not None:
                media["example"] = r.example
            op["requestBody"] = {"required": True, "content": {"application/json": media}}
        if r.raw:
            op["responses"][str(r.status)] = {"description": "stream"}
        elif (i, "response") in by_route:
            op["responses"][str(r.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": by_route[(i, "response")]}},
            }
        else:
            op["responses"][str(r.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": {}}},
            }
        for status in r.also:
            op["responses"][str(status)] = op["responses"][str(r.status)]
        errors = {400, 401, 429, 500} | set(r.extra_statuses)
        if r.policy.kind != PUBLIC:
            errors.add(403)
        if "{" in r.path:
            errors.add(404)
        if r.method in KEYED_METHODS:
            errors |= {409, 422}
        if r.query is not None:
            errors.add(
                422
            )  # a well-formed query can still break a rule (e.g. a date outside the rules in force)
        if r.body is not None:
            errors |= {413, 415}
        for status in sorted(errors - {r.status, *r.also}):
            op["responses"][str(status)] = _problem()
        if r.policy.kind != PUBLIC:
            op["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[r.method.lower()] = op
    for s in system:
        paths.setdefault(s["path"], {})[s["method"].lower()] = s["op"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Errors are application/problem+json (RFC 9457). Authenticate with "
            "`Authorization: Bearer <access_token>` from POST /v1/auth/token.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
