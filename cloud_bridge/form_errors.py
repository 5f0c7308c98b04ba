"""Problems in a form definition, said by the name of the field or table they are in.

pydantic says ``form.fields.3.type: Input should be …``; a form designer
wants ``field 'weather' (form.fields[3]): type must be one of …``. Used by the
API (``POST /api/v1/activity-types``) and the Activity types page alike.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

_PATTERNS = {
    r"^[a-z][a-z0-9_]{0,62}$": (
        "must start with a lowercase letter and hold only lowercase letters, digits and _ "
        "(at most 63)"
    ),
}
_LITERAL = re.compile(r"^Input should be (.*)$")


def _name_at(data: Any, path: list[Any]) -> str | None:
    node = data
    for key in path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return None
    if isinstance(node, dict) and isinstance(node.get("name"), str):
        return str(node["name"])[:64]
    return None


def where(data: Any, loc: tuple[Any, ...]) -> tuple[str, str, str | None]:
    """``("field 'notes' in table 'readings'", "form.tables[0].fields[1]", "type")``.

    The named place (empty when the error is not inside a field or table), the
    dotted path to it, and the setting at fault (None for the place as a whole).
    """
    attr = loc[-1] if loc and isinstance(loc[-1], str) else None
    path = loc[:-1] if attr is not None else loc
    parts: list[str] = []
    dotted = ""
    for i, key in enumerate(path):
        dotted += f"[{key}]" if isinstance(key, int) else (f".{key}" if dotted else str(key))
        if isinstance(key, int) and i > 0 and path[i - 1] in ("fields", "tables"):
            kind = "field" if path[i - 1] == "fields" else "table"
            name = _name_at(data, list(path[: i + 1]))
            parts.append(f"{kind} {name!r}" if name else f"{kind} #{key + 1}")
    return " in ".join(reversed(parts)), dotted, attr


def _message(err: Any) -> str:
    kind = err["type"]
    msg = str(err["msg"])
    if kind == "extra_forbidden":
        return "is not a known setting"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern", "")
        return _PATTERNS.get(pattern, f"must match {pattern}")
    if kind == "literal_error":
        m = _LITERAL.match(msg)
        return "must be " + (m.group(1) if m else msg)
    return msg.removeprefix("Value error, ")


def problems(data: Any, exc: ValidationError, limit: int = 5) -> list[str]:
    """One sentence per problem (at most ``limit``), each naming where it is."""
    out = []
    for err in exc.errors()[:limit]:
        label, dotted, attr = where(data, tuple(err["loc"]))
        message = _message(err)
        if label:
            out.append(f"{label} ({dotted}): {attr + ' ' if attr else ''}{message}")
        elif attr and err["type"] == "value_error":  # about the whole of ``attr``
            out.append(f"{dotted + '.' if dotted else ''}{attr}: {message}")
        elif attr:
            out.append(f"{dotted + '.' if dotted else ''}{attr} {message}")
        else:
            out.append(f"{dotted or 'the definition'}: {message}")
    more = len(exc.errors()) - limit
    if more > 0:
        out.append(f"and {more} more")
    return out
