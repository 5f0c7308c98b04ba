"""Form definitions and the one validator both the gateway and central use.

An activity type carries a form: top-level fields and child tables of fields.
A submission (an envelope's ``record`` and ``tables``) is checked against it:
types, required fields, choice options and unknown fields. Problems come back
as a list of readable sentences so a crew member can fix them.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FieldType = Literal[
    "text", "number", "integer", "boolean", "date", "datetime", "choice", "attachment", "signature"
]
BLOB_TYPES = frozenset({"attachment", "signature"})
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_TEXT = 20_000
MAX_ROWS = 1_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FormField(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    type: FieldType
    required: bool = False
    label: str | None = Field(default=None, max_length=200)
    options: list[str] | None = None

    @model_validator(mode="after")
    def _options_only_for_choice(self) -> FormField:
        if self.type == "choice" and not self.options:
            raise ValueError(f"choice field {self.name!r} needs a non-empty 'options' list")
        if self.type != "choice" and self.options is not None:
            raise ValueError(f"field {self.name!r} has 'options' but is not a choice")
        return self


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what} name {name!r}")
        seen.add(name)


class FormTable(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    label: str | None = Field(default=None, max_length=200)
    fields: list[FormField] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _unique_fields(self) -> FormTable:
        _unique([f.name for f in self.fields], f"field in table {self.name!r}")
        return self


class FormDefinition(_Strict):
    fields: list[FormField] = Field(default_factory=list, max_length=500)
    tables: list[FormTable] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _unique_names(self) -> FormDefinition:
        _unique([f.name for f in self.fields], "field")
        _unique([t.name for t in self.tables], "table")
        return self


class ActivityTypeDef(_Strict):
    """An activity type as central defines it (``POST /api/v1/activity-types``)."""

    name: str = Field(pattern=NAME_PATTERN)
    offline: bool = False
    form: FormDefinition


def _check_value(field: FormField, value: Any, where: str, complete: bool) -> str | None:
    """One problem sentence for ``value`` against ``field``, or None when it fits."""
    label = f"{where}{field.name!r}"
    required = field.required and complete
    if value is None:
        return f"{label} is required" if required else None
    kind = field.type
    if kind == "text":
        if not isinstance(value, str):
            return f"{label} must be text"
        if required and not value.strip():
            return f"{label} is required"
        if len(value) > MAX_TEXT:
            return f"{label} is longer than {MAX_TEXT} characters"
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{label} must be a number"
        if not math.isfinite(value):
            return f"{label} must be a finite number"
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{label} must be a whole number"
    elif kind == "boolean":
        if not isinstance(value, bool):
            return f"{label} must be true or false"
    elif kind == "date":
        if not isinstance(value, str):
            return f"{label} must be a date like 2026-11-23"
        try:
            date.fromisoformat(value)
        except ValueError:
            return f"{label} must be a date like 2026-11-23"
    elif kind == "datetime":
        if not isinstance(value, str):
            return f"{label} must be a date and time like 2026-11-23T09:00:00Z"
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return f"{label} must be a date and time like 2026-11-23T09:00:00Z"
    elif kind == "choice":
        if value not in (field.options or []):
            opts = ", ".join(repr(o) for o in field.options or [])
            return f"{label} must be one of {opts}"
    elif kind in BLOB_TYPES and (not isinstance(value, str) or not SHA256_RE.fullmatch(value)):
        return f"{label} must be the SHA-256 (64 hex digits) of an uploaded file"
    return None


def _check_row(
    fields: list[FormField],
    row: Any,
    where: str,
    problems: list[str],
    blobs: set[str],
    complete: bool,
) -> None:
    if not isinstance(row, dict):
        problems.append(f"{where.rstrip(' ')} must be an object of field values")
        return
    known = {f.name for f in fields}
    for name in row:
        if name not in known:
            problems.append(f"{where}{name!r} is not a field of this form")
    for field in fields:
        value = row.get(field.name)
        problem = _check_value(field, value, where, complete)
        if problem:
            problems.append(problem)
        elif field.type in BLOB_TYPES and isinstance(value, str):
            blobs.add(value)


def validate_submission(
    form: FormDefinition,
    record: Any,
    tables: Any,
    attachments: list[str] | None = None,
    *,
    complete: bool = True,
) -> list[str]:
    """Every problem of a submission against ``form``; empty when it is valid.

    ``complete=False`` checks a draft: answers given must fit, but required
    ones may still be missing (a crew saves a half-filled form any time; the
    ``completed`` envelope must have them all). Blob fields must name a hash
    listed in ``attachments`` (when given), so central knows every blob an
    envelope expects.
    """
    problems: list[str] = []
    blobs: set[str] = set()
    _check_row(form.fields, record, "field ", problems, blobs, complete)
    if not isinstance(tables, dict):
        problems.append("tables must be an object of table name to rows")
        tables = {}
    by_name = {t.name: t for t in form.tables}
    for name, rows in tables.items():
        table = by_name.get(name)
        if table is None:
            problems.append(f"table {name!r} is not part of this form")
            continue
        if not isinstance(rows, list):
            problems.append(f"table {name!r} must be a list of rows")
            continue
        if len(rows) > MAX_ROWS:
            problems.append(f"table {name!r} has more than {MAX_ROWS} rows")
            continue
        for i, row in enumerate(rows, start=1):
            _check_row(table.fields, row, f"{name} row {i} field ", problems, blobs, complete)
    if attachments is not None:
        missing = sorted(blobs - set(attachments))
        if missing:
            problems.append(
                "files used in the form are not listed in attachments: "
                + ", ".join(m[:12] + "…" for m in missing)
            )
    return problems
