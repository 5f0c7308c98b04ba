"""The parts of an OpenAPI 3.1 document both services build from their route tables.

Central (``cloud_bridge.openapi``) and the gateway (``gateway.api.openapi``) each
walk their own routes; what an operation's error answers, path parameters,
components and the document's frame look like is said once, here.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, TypeAdapter

REF = "#/components/schemas/{model}"
ERROR_REF: dict[str, Any] = {"$ref": REF.format(model="Error")}
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


def schema_of(kind: Any) -> dict[str, Any]:
    """The JSON schema of a type (an ``Annotated`` identifier from ``outpost.wire.schemas``)."""
    return TypeAdapter(kind).json_schema()


def regex_schema(pattern: re.Pattern[str]) -> dict[str, Any]:
    """A string matching ``pattern`` whole (the path regexes are used with ``fullmatch``)."""
    return {"type": "string", "pattern": f"^{pattern.pattern}$"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def error(description: str, *, body: bool = True) -> dict[str, Any]:
    """An error answer: ``{"error": {"code", "message"}}``, or no body (to a HEAD)."""
    if not body:
        return {"description": description}
    return {"description": description, "content": json_content(ERROR_REF)}


def component(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    """``model``'s schema as a component; the models it uses become components too."""
    schema = model.model_json_schema(ref_template=REF)
    for name, sub in schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas.setdefault(model.__name__, schema)
    return {"$ref": REF.format(model=model.__name__)}


def path_parameters(
    path: str,
    schemas: dict[str, dict[str, Any]],
    examples: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The ``{name}`` parameters of ``path``; ``schemas`` says what each name holds."""
    params = []
    for name in _PARAM.findall(path):
        param: dict[str, Any] = {
            "name": name,
            "in": "path",
            "required": True,
            "schema": schemas.get(name, {"type": "string"}),
        }
        if examples and name in examples:
            param["example"] = examples[name]
        params.append(param)
    return params


def document(
    title: str, version: str, paths: dict[str, Any], schemas: dict[str, Any]
) -> dict[str, Any]:
    """The whole document: bearer tokens by default (an operation says ``security: []``)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
    }
