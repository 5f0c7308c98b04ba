"""The admin API's OpenAPI 3.1 document, generated from the route table.

Each ``Route`` (``cloud_bridge.access``) says its body, whether it is public
and the answers beyond every operation's own (``statuses``): the document
has no table of its own to drift from them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel

import outpost
from cloud_bridge.access import Route
from cloud_bridge.fleet import FIGURE_SCHEMA, GATEWAY_SCHEMA
from outpost.openapi import ERROR_SCHEMA, component, path_parameters, schema_of
from outpost.openapi import document as frame
from outpost.openapi import error as _error
from outpost.wire.schemas import ActivityId, GatewayId, Sha256, TypeName, Username

# What a path parameter holds, by its name: the wire contract's identifiers.
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "activity_id": schema_of(ActivityId),
    "gateway_id": schema_of(GatewayId),
    "username": schema_of(Username),
    "sha256": schema_of(Sha256),
    "name": schema_of(TypeName),
    "type": schema_of(TypeName),
    "envelope_id": {"type": "string", "format": "uuid"},
    "token_id": {"type": "string", "pattern": "^[0-9a-f]{12}$"},  # identity.create_token
    "version": {"type": "integer", "minimum": 1, "maximum": 999_999_999},
}


@lru_cache(maxsize=1)
def document(routes: tuple[Route, ...]) -> dict[str, Any]:
    """The document for ``routes`` (``cloud_bridge.app.api_routes()``, kept on the app)."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {
        "Error": ERROR_SCHEMA,
        "Gateway": GATEWAY_SCHEMA,
        "Figure": FIGURE_SCHEMA,
    }
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": {
                "200": {"description": "OK"},
                "400": _error(
                    "the body or a parameter is not valid, or the address holds a control "
                    "character (invalid_path, invalid_query)"
                ),
                "404": _error("no such thing"),
                "409": _error("the activity's state refuses it (rule code in error.code)"),
            },
        }
        if route.public:
            op["security"] = []
        else:
            op["responses"]["401"] = _error("no token, or one that is not valid")
            op["responses"]["403"] = _error("this role may not do that (error.message says why)")
        params = path_parameters(route.path, PATH_PARAMETERS)
        if params:
            op["parameters"] = params
        model: type[BaseModel] | None = route.body
        if model is not None:
            op["requestBody"] = {
                "required": not route.body_optional,
                "content": {"application/json": {"schema": component(model, schemas)}},
            }
            op["responses"]["413"] = _error("the body is larger than admin.max_body_bytes")
        if route.answer is not None:
            op["responses"]["200"] = dict(route.answer)
        if route.params:
            op.setdefault("parameters", []).extend(dict(p) for p in route.params)
        for status, why in route.statuses.items():
            if status.startswith("2"):
                op["responses"][status] = {"description": why}
            else:
                op["responses"][status] = _error(why)
        paths.setdefault(route.path, {})[route.method.lower()] = op
    _xlsform_upload(paths, schemas)
    _no_control_characters_in_queries(paths)
    return frame("Outpost central admin API", outpost.__version__, paths, schemas)


def json_answer(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    """A 200 answer with a documented JSON shape, for a ``Route``'s ``answer``."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


GATEWAY_REF = {"$ref": "#/components/schemas/Gateway"}
GATEWAY_PAGE: dict[str, Any] = {
    "type": "object",
    "required": ["gateways", "total", "next_cursor", "as_of", "broker_connected"],
    "properties": {
        "gateways": {"type": "array", "items": GATEWAY_REF},
        "total": {"type": "integer", "description": "gateways matching the filters"},
        "next_cursor": {
            "type": ["string", "null"],
            "description": "give it as cursor for the next page; null on the last",
        },
        "as_of": {
            "type": "string",
            "format": "date-time",
            "description": "the time health is judged at (that of a walk's first page)",
        },
        "broker_connected": {"type": "boolean"},
    },
}
BYTES_ANSWER: dict[str, Any] = {
    "description": "The attachment's bytes, exactly as the device stored them",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


# What app.input_middleware refuses in every query value (400 invalid_query), said
# once for every free-text query parameter.
NO_CONTROL_CHARACTERS = "^[^\\x00-\\x1f\\x7f]*$"


def _no_control_characters_in_queries(paths: dict[str, dict[str, Any]]) -> None:
    for op in (op for item in paths.values() for op in item.values()):
        for param in op.get("parameters", []):
            schema = param.get("schema", {})
            free_text = schema.get("type") == "string" and not {"pattern", "enum"} & set(schema)
            if param.get("in") == "query" and free_text:
                param["schema"] = {**schema, "pattern": NO_CONTROL_CHARACTERS}


def _xlsform_upload(paths: dict[str, dict[str, Any]], schemas: dict[str, Any]) -> None:
    """``POST /api/v1/activity-types`` also takes the XLSForm itself (cloud_bridge.xlsform_views)."""
    from cloud_bridge.xlsform import (
        MAX_XLSX_BYTES,
        PROBLEM_SCHEMA,
        XLSFORM_ERROR_SCHEMA,
        XLSX_CONTENT_TYPE,
    )

    op = paths.get("/api/v1/activity-types", {}).get("post")
    if op is None:
        return
    schemas.setdefault("XlsformProblem", PROBLEM_SCHEMA)
    schemas.setdefault("XlsformError", XLSFORM_ERROR_SCHEMA)
    op["requestBody"]["content"][XLSX_CONTENT_TYPE] = {
        "schema": {"type": "string", "format": "binary", "maxLength": MAX_XLSX_BYTES}
    }
    op["description"] = (
        "With a JSON body: the activity type's definition. With the body an XLSForm "
        f"workbook ({XLSX_CONTENT_TYPE}): the form read from its survey, choices and "
        "settings sheets; the type is the settings sheet's form_id unless `name` says "
        "otherwise; each changed import is a new form version. A workbook using what "
        "Outpost does not support is refused whole: 400 with every problem by sheet, "
        "row and column in error.problems."
    )
    op["parameters"] = [
        *op.get("parameters", []),
        {
            "name": "name",
            "in": "query",
            "required": False,
            "description": "XLSForm upload: the activity type (default: settings form_id)",
            "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
        },
        {
            "name": "offline",
            "in": "query",
            "required": False,
            "description": "XLSForm upload: may go offline (default: the type's current "
            "setting, false for a new type)",
            "schema": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]},
        },
    ]
    ref = {"$ref": "#/components/schemas/XlsformError"}
    op["responses"]["400"] = {
        "description": "the body is not valid; for an XLSForm, error.problems lists each "
        "problem by sheet, row and column (invalid_xlsform)",
        "content": {"application/json": {"schema": ref}},
    }
    op["responses"]["413"] = {
        "description": "the body is larger than admin.max_body_bytes, or the workbook "
        f"larger than {MAX_XLSX_BYTES} bytes (xlsform_too_large)",
        "content": {"application/json": {"schema": ref}},
    }
