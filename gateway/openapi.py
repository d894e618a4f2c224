"""The OpenAPI 3.1 document, generated from the routers' declarations (never hand-written)."""
from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from services.kernel.http import PUBLIC, RouteDef

PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "message": {"type": "string"}}}},
    },
    "additionalProperties": True,
}


def build_openapi(routes: list[RouteDef], system: list[dict[str, Any]], title: str, version: str) -> dict[str, Any]:
    models: list[type[BaseModel]] = []
    for r in routes:
        for m in (r.body, r.query, r.response):
            if isinstance(m, type) and issubclass(m, BaseModel) and m not in models:
                models.append(m)
    _, defs = models_json_schema([(m, "validation" if m is not None else "serialization") for m in models],
                                 ref_template="#/components/schemas/{model}")
    schemas = dict(defs.get("$defs", {}))
    schemas["Problem"] = PROBLEM_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {
            "operationId": r.operation_id,
            "summary": r.summary or r.operation_id,
            "tags": [r.service],
            "x-policy": r.policy.describe(),
            "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                           for p in re.findall(r"{(\w+)}", r.path)],
            "responses": {},
        }
        if r.query is not None:
            for name, f in r.query.model_fields.items():
                schema = TypeAdapter(f.annotation).json_schema(ref_template="#/components/schemas/{model}")
                op["parameters"].append({"name": f.alias or name, "in": "query", "required": f.is_required(),
                                         "schema": schema, "description": f.description or ""})
        if r.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{r.body.__name__}"}}}}
        if r.raw:
            op["responses"][str(r.status)] = {"description": "stream"}
        elif isinstance(r.response, type) and issubclass(r.response, BaseModel):
            op["responses"][str(r.status)] = {"description": "OK", "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{r.response.__name__}"}}}}
        else:
            op["responses"][str(r.status)] = {"description": "OK", "content": {"application/json": {"schema": {}}}}
        errors = {400, 500} | set(r.extra_statuses)
        if r.policy.kind != PUBLIC:
            errors |= {401, 403}
        if "{" in r.path:
            errors.add(404)
        if r.method == "POST":
            errors |= {409, 422, 429}
        for status in sorted(errors):
            op["responses"][str(status)] = {"description": "problem", "content": {"application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"}}}}
        if r.policy.kind != PUBLIC:
            op["security"] = [{"bearer": []}]
        paths.setdefault(r.path, {})[r.method.lower()] = op
    for s in system:
        paths.setdefault(s["path"], {})[s["method"].lower()] = s["op"]
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    }
