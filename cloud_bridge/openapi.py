"""The admin API's OpenAPI 3.1 document, generated from the route table."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import outpost
from cloud_bridge.fleet import FIGURE_SCHEMA, GATEWAY_SCHEMA
from outpost.forms import ActivityTypeDef

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_PARAM = re.compile(r"{(\w+)}")


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    from cloud_bridge.views import all_routes

    paths: dict[str, dict[str, Any]] = {}
    for route in all_routes():
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": {
                "200": {"description": "OK"},
                "400": _error("the body or a parameter is not valid"),
                "404": _error("no such thing"),
                "409": _error("the activity's state refuses it (rule code in error.code)"),
            },
        }
        if route.public:
            op["security"] = []
        else:
            op["responses"]["401"] = _error("no or wrong admin token")
        params = _PARAM.findall(route.path)
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ]
        body_schema = None
        if route.body is not None:
            body_schema = route.body.model_json_schema()
        elif route.path == "/api/v1/activity-types" and route.method == "POST":
            body_schema = ActivityTypeDef.model_json_schema()
        if body_schema is not None:
            op["requestBody"] = {
                "required": route.method != "POST" or not route.path.endswith("/cancel"),
                "content": {"application/json": {"schema": body_schema}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = op
    _fleet_responses(paths)
    attachment = paths.get("/api/v1/attachments/{sha256}", {}).get("get")
    if attachment is not None:
        attachment["responses"]["200"] = {
            "description": "The attachment's bytes, exactly as the device stored them",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Outpost central admin API", "version": outpost.__version__},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR_SCHEMA, "Gateway": GATEWAY_SCHEMA, "Figure": FIGURE_SCHEMA},
        },
    }


def _fleet_responses(paths: dict[str, dict[str, Any]]) -> None:
    """The fleet's answers have a documented shape (cloud_bridge.fleet)."""
    gateway = {"$ref": "#/components/schemas/Gateway"}
    shapes = {
        "/api/v1/gateways": {
            "type": "object",
            "properties": {
                "gateways": {"type": "array", "items": gateway},
                "broker_connected": {"type": "boolean"},
            },
        },
        "/api/v1/gateways/{gateway_id}": gateway,
    }
    for path, schema in shapes.items():
        op = paths.get(path, {}).get("get")
        if op is not None:
            op["responses"]["200"] = {
                "description": "OK",
                "content": {"application/json": {"schema": schema}},
            }
