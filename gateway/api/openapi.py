"""The LAN API's OpenAPI 3.1 document (``GET /api/v1/openapi.json``), built from the routes.

Each handler in ``gateway.api.views`` and ``gateway.api.site`` says what it
answers with ``@described(...)`` next to its ``@routes`` line; the document
is the app's registered routes with those descriptions (``outpost.openapi``
assembles the parts), so a route cannot be served undocumented or documented
unserved (a test checks the routes both ways; schemathesis, against a real
gateway process, checks the statuses, bodies and headers). Statuses every
operation can give are added once, in ``_operation``: 400 for a request
holding a value the gateway cannot read, 503 while it restarts, 401 where a
token is needed, 413 where a body is read. A path or method nobody serves
answers 404 or 405 with ``Allow``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

import outpost
from outpost.openapi import (
    ERROR_SCHEMA,
    component,
    document,
    error,
    json_content,
    path_parameters,
    regex_schema,
)
from outpost.wire.schemas import ACTIVITY_ID_RE, SHA256_RE

Handler = TypeVar("Handler", bound=Callable[..., Any])

# What a path parameter holds, by its name, and an example of one.
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "activity_id": regex_schema(ACTIVITY_ID_RE),
    "sha256": regex_schema(SHA256_RE),
}
PATH_EXAMPLES: dict[str, Any] = {"activity_id": "act-1", "sha256": "9f86d081" + "0" * 56}
# Answers that say when to come back.
RETRY_AFTER = ("429", "503", "507")


@dataclass(frozen=True)
class Doc:
    """One operation: ``ok`` maps a status to a description or a JSON schema for its body."""

    summary: str
    ok: Mapping[str, str | dict[str, Any]]
    errors: Mapping[str, str] = field(default_factory=dict)
    body: type[BaseModel] | dict[str, Any] | None = None
    body_type: str = "application/json"
    public: bool = False
    params: tuple[dict[str, Any], ...] = ()  # beyond the path's own
    head: bool = False  # a HEAD answer has no body
    headers: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # by status


DESCRIBED: dict[Callable[..., Any], Doc] = {}


def described(
    summary: str, ok: Mapping[str, str | dict[str, Any]], **kw: Any
) -> Callable[[Handler], Handler]:
    """Say what a handler answers (``Doc``'s fields); put it under the ``@routes`` line."""
    doc = Doc(summary, ok, **kw)

    def mark(handler: Handler) -> Handler:
        DESCRIBED[handler] = doc
        return handler

    return mark


def served(app: web.Application) -> tuple[tuple[str, str, Callable[..., Any]], ...]:
    """(method, path, handler) of every described route ``app`` serves.

    aiohttp adds a HEAD to each GET with the GET's handler: that HEAD is left out.
    """
    found = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path is None or route.handler not in DESCRIBED:
            continue
        if route.method == "HEAD" and any(
            r.method == "GET" and r.handler is route.handler for r in route.resource or ()
        ):
            continue
        found.append((route.method, path, route.handler))
    return tuple(found)


def _operation(path: str, doc: Doc, schemas: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for code, what in doc.ok.items():
        if isinstance(what, str):
            responses[code] = {"description": what}
        else:
            shape = dict(what)
            description = shape.pop("description", "")
            responses[code] = {"description": description, "content": json_content(shape)}
        if code in doc.headers:
            responses[code]["headers"] = doc.headers[code]
    common = {
        "400": "the request holds a value the gateway cannot read (its encoding, a number)",
        "503": "shutting_down: the gateway is restarting; try again shortly",
    }
    if not doc.public:
        common["401"] = "no, invalid or expired token"
    if doc.body is not None:
        common["413"] = "the body is larger than the gateway accepts"
    for code, text in {**common, **doc.errors}.items():
        if code in responses:
            continue
        responses[code] = error(text, body=not doc.head)
        if code in RETRY_AFTER:
            responses[code]["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    op: dict[str, Any] = {"summary": doc.summary, "responses": dict(sorted(responses.items()))}
    if doc.public:
        op["security"] = []
    if doc.body is not None:
        schema = doc.body if isinstance(doc.body, dict) else component(doc.body, schemas)
        op["requestBody"] = {"required": True, "content": {doc.body_type: {"schema": schema}}}
    params = [*path_parameters(path, PATH_PARAMETERS, PATH_EXAMPLES), *doc.params]
    if params:
        op["parameters"] = params
    return op


@lru_cache(maxsize=1)
def openapi_document(routes: Iterable[tuple[str, str, Callable[..., Any]]]) -> dict[str, Any]:
    """The document for ``routes`` (``served(app)``)."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for method, path, handler in routes:
        op = _operation(path, DESCRIBED[handler], schemas)
        paths.setdefault(path, {})[method.lower()] = op
    return document("Outpost gateway LAN API", outpost.__version__, paths, schemas)


# Shapes more than one operation answers with.
ISO = {"type": "string", "format": "date-time"}
USER = {
    "type": "object",
    "required": ["username"],
    "properties": {"username": {"type": "string"}, "display_name": {"type": ["string", "null"]}},
}
UPLOAD_STATE = {
    "type": "object",
    "required": ["sha256", "size", "received", "complete"],
    "properties": {
        "sha256": {"type": "string"},
        "size": {"type": ["integer", "null"]},
        "received": {"type": "integer"},
        "complete": {"type": "boolean"},
    },
}
UPLOAD_HEADERS = {
    "Upload-Offset": {"schema": {"type": "string"}, "description": "bytes durably received"},
    "X-Upload-Complete": {"schema": {"type": "string", "enum": ["true", "false"]}},
}
RANGE = {
    "name": "Content-Range",
    "in": "header",
    "required": False,
    "schema": {
        "type": "string",
        "pattern": r"^bytes [0-9]{1,15}-[0-9]{1,15}/[0-9]{1,15}$",
        "example": "bytes 0-1048575/5242880",
    },
}
