"""Form definitions and the one validator both the gateway and central use.

An activity type carries a form: top-level fields and child tables of fields
(an XLSForm repeat), with the XLSForm logic: relevance, constraints,
required-if, calculations and defaults, labels and hints per language, and
groups (sections on screen). A submission (an envelope's ``record`` and
``tables``) is checked against it: types, required fields, choice options,
unknown fields and the logic. Problems come back as a list of readable
sentences so a crew member can fix them. The expression language lives in
``outpost/formexpr.py``; docs/forms.md says what is supported.
"""

from __future__ import annotations

import math
import re
from datetime import UTC as _UTC
from datetime import date, datetime, time
from functools import cached_property, lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from outpost import formexpr
from outpost.formexpr import MAX_EXPRESSION, Expression, ExpressionError

FieldType = Literal[
    "text",
    "number",
    "integer",
    "boolean",
    "date",
    "datetime",
    "time",
    "choice",
    "multichoice",
    "attachment",
    "signature",
    "note",
    "calculate",
    "acknowledge",
]
BLOB_TYPES = frozenset({"attachment", "signature"})
CHOICE_TYPES = frozenset({"choice", "multichoice"})
# Types whose value a calculation may set (a calculate, or a read-only computed answer).
CALCULATED_TYPES = frozenset({"calculate", "text", "number", "integer", "choice"})
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}$"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?$")
MAX_TEXT = 20_000
MAX_ROWS = 1_000
MAX_LABEL = 1_000
MAX_HINT = 2_000
MAX_MESSAGE = 500
MAX_LANGUAGES = 20
MAX_OPTIONS = 500

Language = Annotated[str, StringConstraints(pattern=LANGUAGE_PATTERN)]
ExpressionText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EXPRESSION)]
OptionValue = Annotated[str, StringConstraints(min_length=1, max_length=200)]


# A label, hint or message: one text, or one per language tag ({"en": …, "pt-BR": …}).
LabelText = Annotated[str, StringConstraints(max_length=MAX_LABEL)]
HintText = Annotated[str, StringConstraints(max_length=MAX_HINT)]
MessageText = Annotated[str, StringConstraints(max_length=MAX_MESSAGE)]
Label = (
    LabelText | Annotated[dict[Language, LabelText], Field(min_length=1, max_length=MAX_LANGUAGES)]
)
Hint = HintText | Annotated[dict[Language, HintText], Field(min_length=1, max_length=MAX_LANGUAGES)]
Message = (
    MessageText
    | Annotated[dict[Language, MessageText], Field(min_length=1, max_length=MAX_LANGUAGES)]
)


def text_of(value: Any, language: str | None = None) -> str | None:
    """One text of a label/hint/message: ``language``'s, else English, else the first."""
    if value is None or isinstance(value, str):
        return value
    for tag in (language, "en"):
        if tag and tag in value:
            return str(value[tag])
    return str(next(iter(value.values())))


@lru_cache(maxsize=4096)
def parse_expression(text: str) -> Expression:
    """The parsed expression (cached: a form's expressions are parsed once per process)."""
    return formexpr.parse(text)


def _parse_or_refuse(text: str | None, what: str) -> Expression | None:
    if text is None:
        return None
    try:
        return parse_expression(text)
    except ExpressionError as exc:
        raise ValueError(f"{what} {text[:80]!r}: {exc}") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FormField(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    type: FieldType
    label: Label | None = None
    hint: Hint | None = None
    required: bool | ExpressionText = False
    required_message: Message | None = None
    relevant: ExpressionText | None = None
    constraint: ExpressionText | None = None
    constraint_message: Message | None = None
    calculation: ExpressionText | None = None
    default: Any = None
    read_only: bool = False
    group: str | None = Field(default=None, pattern=NAME_PATTERN)
    options: list[OptionValue] | None = Field(default=None, max_length=MAX_OPTIONS)
    option_labels: dict[OptionValue, Label] | None = Field(default=None, max_length=MAX_OPTIONS)

    @model_validator(mode="after")
    def _consistent(self) -> FormField:
        name, kind = self.name, self.type
        if kind in CHOICE_TYPES and not self.options:
            raise ValueError(f"{kind} field {name!r} needs a non-empty 'options' list")
        if kind not in CHOICE_TYPES and self.options is not None:
            raise ValueError(f"field {name!r} has 'options' but is not a choice or multichoice")
        if self.options is not None:
            _unique(self.options, f"option of field {name!r}")
            if kind == "multichoice" and any(re.search(r"\s", o) for o in self.options):
                # The value is read in expressions as the options joined by spaces (ODK).
                raise ValueError(f"multichoice field {name!r}: an option may not contain spaces")
        if self.option_labels is not None:
            unknown = sorted(set(self.option_labels) - set(self.options or []))
            if unknown:
                raise ValueError(f"field {name!r}: option_labels name unknown options {unknown}")
        if kind == "note" and (
            self.required is not False
            or self.default is not None
            or self.constraint
            or self.calculation
        ):
            raise ValueError(
                f"note {name!r} shows text only: no required, default, constraint or calculation"
            )
        if kind == "calculate" and not self.calculation:
            raise ValueError(f"calculate field {name!r} needs a 'calculation'")
        if self.calculation and kind not in CALCULATED_TYPES:
            raise ValueError(f"field {name!r}: a {kind} field cannot have a calculation")
        if self.constraint_message is not None and not self.constraint:
            raise ValueError(f"field {name!r} has a constraint_message but no constraint")
        required = self.required if isinstance(self.required, str) else None
        for what, text in (
            ("relevant", self.relevant),
            ("constraint", self.constraint),
            ("calculation", self.calculation),
            ("required", required),
        ):
            _parse_or_refuse(text, f"field {name!r}: {what}")
        if self.default is not None:
            problem = _check_value(self, self.default, "default of field ", complete=False)
            if problem:
                raise ValueError(problem)
        return self

    def expressions(self) -> list[tuple[str, Expression]]:
        """(what, parsed) for each expression of this field."""
        out = []
        required = self.required if isinstance(self.required, str) else None
        for what, text in (
            ("relevant", self.relevant),
            ("constraint", self.constraint),
            ("calculation", self.calculation),
            ("required", required),
        ):
            if text is not None:
                out.append((what, parse_expression(text)))
        return out


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what} name {name!r}")
        seen.add(name)


class FormTable(_Strict):
    """A child table: an XLSForm repeat, one row per repetition."""

    name: str = Field(pattern=NAME_PATTERN)
    label: Label | None = None
    hint: Hint | None = None
    relevant: ExpressionText | None = None
    group: str | None = Field(default=None, pattern=NAME_PATTERN)
    fields: list[FormField] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _unique_fields(self) -> FormTable:
        _unique([f.name for f in self.fields], f"field in table {self.name!r}")
        _parse_or_refuse(self.relevant, f"table {self.name!r}: relevant")
        return self


class FormGroup(_Strict):
    """A section on screen (XLSForm begin/end group); hidden whole when not relevant."""

    name: str = Field(pattern=NAME_PATTERN)
    label: Label | None = None
    relevant: ExpressionText | None = None

    @model_validator(mode="after")
    def _parsed(self) -> FormGroup:
        _parse_or_refuse(self.relevant, f"group {self.name!r}: relevant")
        return self


class FormDefinition(_Strict):
    title: Label | None = None
    languages: list[Language] = Field(default_factory=list, max_length=MAX_LANGUAGES)
    default_language: Language | None = None
    groups: list[FormGroup] = Field(default_factory=list, max_length=200)
    fields: list[FormField] = Field(default_factory=list, max_length=500)
    tables: list[FormTable] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _unique_names(self) -> FormDefinition:
        _unique([f.name for f in self.fields], "field")
        _unique([t.name for t in self.tables], "table")
        _unique([g.name for g in self.groups], "group")
        _unique(self.languages, "language")
        if self.default_language and self.languages and self.default_language not in self.languages:
            raise ValueError(f"default_language {self.default_language!r} is not in languages")
        groups = {g.name for g in self.groups}
        items: list[FormField | FormTable] = [*self.fields, *self.tables]
        items += [f for t in self.tables for f in t.fields]
        for item in items:
            if item.group is not None and item.group not in groups:
                raise ValueError(f"{item.name!r} names group {item.group!r}, which is not defined")
        _check_references(self)
        return self

    def message_language(self) -> str | None:
        return self.default_language or (self.languages[0] if self.languages else None)

    @cached_property
    def has_logic(self) -> bool:
        """Any relevance, calculation, constraint or required-if (else a plain, faster check)."""
        return _uses_logic(self)

    @cached_property
    def reads_today(self) -> bool:
        return _uses_today(self)


def _check_references(form: FormDefinition) -> None:
    """Every ${name} an expression reads must resolve from where it is evaluated."""
    top = {f.name for f in form.fields}
    table_names = {t.name for t in form.tables}
    owners: dict[str, list[str]] = {}
    for t in form.tables:
        for f in t.fields:
            owners.setdefault(f.name, []).append(t.name)

    def check(expr: Expression, where: str, table: FormTable | None) -> None:
        for ref in sorted(expr.refs):
            if table is not None and any(f.name == ref for f in table.fields):
                continue
            if ref in top or ref in table_names:
                continue
            holders = owners.get(ref, [])
            if len(holders) == 1:
                continue
            if len(holders) > 1:
                raise ValueError(
                    f"{where} {expr.text[:80]!r}: ${{{ref}}} is a field of tables "
                    f"{', '.join(holders)}; it is ambiguous here"
                )
            raise ValueError(f"{where} {expr.text[:80]!r}: ${{{ref}}} is not a field of this form")
        if table is None and "position" in expr.calls:
            raise ValueError(f"{where} {expr.text[:80]!r}: position() only works inside a table")

    for g in form.groups:
        if g.relevant:
            check(parse_expression(g.relevant), f"group {g.name!r}: relevant", None)
    for f in form.fields:
        for what, expr in f.expressions():
            check(expr, f"field {f.name!r}: {what}", None)
    for t in form.tables:
        if t.relevant:
            check(parse_expression(t.relevant), f"table {t.name!r}: relevant", None)
        for f in t.fields:
            for what, expr in f.expressions():
                check(expr, f"table {t.name!r} field {f.name!r}: {what}", t)


class ActivityTypeDef(_Strict):
    """An activity type as central defines it (``POST /api/v1/activity-types``)."""

    name: str = Field(pattern=NAME_PATTERN)
    offline: bool = False
    form: FormDefinition


def _check_value(field: FormField, value: Any, where: str, complete: bool = False) -> str | None:
    """One problem sentence for ``value``'s type against ``field``, or None when it fits.

    Only the shape of the answer: whether it is required, relevant, allowed by
    its constraint or equal to its calculation is the logic's part (below).
    """
    label = f"{where}{field.name!r}"
    if value is None:
        return None
    kind = field.type
    if kind in ("text", "calculate"):
        if not isinstance(value, str):
            return f"{label} must be text"
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
    elif kind == "acknowledge":
        if value is not True:
            return f"{label} must be true (acknowledged) or left empty"
    elif kind == "note":
        return f"{label} is a note: it has no answer"
    elif kind in ("date", "datetime", "time"):
        return _moment_problem(kind, value, label)
    elif kind in ("choice", "multichoice"):
        return _choice_problem(field, value, label)
    elif kind in BLOB_TYPES and (not isinstance(value, str) or not SHA256_RE.fullmatch(value)):
        return f"{label} must be the SHA-256 (64 hex digits) of an uploaded file"
    return None


_MOMENT_SHAPES = {
    "date": "a date like 2026-11-23",
    "datetime": "a date and time like 2026-11-23T09:00:00Z",
    "time": "a time like 09:30",
}


def _moment_problem(kind: str, value: Any, label: str) -> str | None:
    """A date, date-time or time answer: ISO 8601 text that Python reads back."""
    problem = f"{label} must be {_MOMENT_SHAPES[kind]}"
    if not isinstance(value, str):
        return problem
    if kind == "time":
        if not TIME_RE.fullmatch(value):
            return problem
        time.fromisoformat(value)
        return None
    try:
        (date if kind == "date" else datetime).fromisoformat(value)
    except ValueError:
        return problem
    return None


def _choice_problem(field: FormField, value: Any, label: str) -> str | None:
    """One option (``choice``), or a list of distinct options (``multichoice``)."""
    opts = field.options or []
    if field.type == "choice":
        if value in opts:
            return None
        return f"{label} must be one of {_listed(opts)}"
    if (
        not isinstance(value, list)
        or any(v not in opts for v in value)
        or len(set(value)) != len(value)
    ):
        return f"{label} must be a list of distinct options from {_listed(opts)}"
    return None


def _listed(opts: list[Any]) -> str:
    # Only for a problem's text: replay checks every answer of every envelope.
    return ", ".join(repr(o) for o in opts)


def instance_value(field: FormField, value: Any) -> str:
    """An answer as expressions read it (ODK's instance text)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        if field.type == "acknowledge":
            return "OK" if value else ""
        return "true" if value else "false"
    if isinstance(value, int | float):
        return formexpr.number_string(float(value))
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def _missing(field: FormField, value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list):
        return not value
    return False


# Relevance and calculations can feed each other; they are evaluated in form
# order, repeatedly until nothing changes (the web app does the same passes).
MAX_PASSES = 10


class FormState:
    """What a form's logic makes of a submission: relevance and computed values.

    ``top``/``rows`` hold each field's value as expressions read it: the answer
    when the field is relevant, '' when it is not, the computed value for a
    calculation. The same algorithm runs in the web app (formlogic.js).
    """

    def __init__(
        self, form: FormDefinition, record: dict[str, Any], tables: dict[str, Any], today: str
    ) -> None:
        self.form = form
        self.today = today
        self.raw_top = {f.name: instance_value(f, record.get(f.name)) for f in form.fields}
        self.raw_rows: dict[str, list[dict[str, str]]] = {}
        for t in form.tables:
            rows = tables.get(t.name) or []
            self.raw_rows[t.name] = [
                {f.name: instance_value(f, row.get(f.name)) for f in t.fields} for row in rows
            ]
        self.top = dict(self.raw_top)
        self.rows = {name: [dict(r) for r in rows] for name, rows in self.raw_rows.items()}
        self.group_relevant: dict[str, bool] = {}
        self.top_relevant: dict[str, bool] = {}
        self.table_relevant: dict[str, bool] = {}
        self.row_relevant: dict[str, list[dict[str, bool]]] = {
            t.name: [{} for _ in self.raw_rows[t.name]] for t in form.tables
        }
        self._owner = {f.name: t.name for t in form.tables for f in t.fields}
        self._tables = {t.name: t for t in form.tables}
        for _ in range(MAX_PASSES):
            if not self._pass():
                break

    def scope(self, table: str | None = None, row: int = 0, current: str = "") -> _Scope:
        return _Scope(self, table, row, current)

    def eval(
        self, text: str, table: str | None = None, row: int = 0, current: str = ""
    ) -> formexpr.Value:
        return formexpr.evaluate(parse_expression(text).tree, self.scope(table, row, current))

    def _field(
        self,
        f: FormField,
        values: dict[str, str],
        raw: dict[str, str],
        relevant: dict[str, bool],
        rel: bool,
        table: str | None,
        row: int,
    ) -> bool:
        if rel and f.relevant:
            rel = formexpr.to_bool(self.eval(f.relevant, table, row, raw[f.name]))
        value = raw[f.name] if rel else ""
        if rel and f.calculation:
            value = calculated(f, self.eval(f.calculation, table, row, raw[f.name]))
        changed = relevant.get(f.name) != rel or values[f.name] != value
        relevant[f.name] = rel
        values[f.name] = value
        return changed

    def _pass(self) -> bool:
        changed = False
        for g in self.form.groups:
            rel = not g.relevant or formexpr.to_bool(self.eval(g.relevant))
            changed |= self.group_relevant.get(g.name) != rel
            self.group_relevant[g.name] = rel
        groups = self.group_relevant
        for f in self.form.fields:
            rel = groups.get(f.group or "", True)
            changed |= self._field(f, self.top, self.raw_top, self.top_relevant, rel, None, 0)
        for t in self.form.tables:
            trel = groups.get(t.group or "", True) and (
                not t.relevant or formexpr.to_bool(self.eval(t.relevant))
            )
            changed |= self.table_relevant.get(t.name) != trel
            self.table_relevant[t.name] = trel
            for i, raw in enumerate(self.raw_rows[t.name]):
                values, relevant = self.rows[t.name][i], self.row_relevant[t.name][i]
                for f in t.fields:
                    rel = trel and groups.get(f.group or "", True)
                    changed |= self._field(f, values, raw, relevant, rel, t.name, i)
        return changed


class _Scope:
    def __init__(self, state: FormState, table: str | None, row: int, current: str) -> None:
        self.state, self.table, self.row, self._current = state, table, row, current

    def value(self, name: str) -> str | list[str]:
        st = self.state
        if self.table is not None:
            row = st.rows[self.table][self.row]
            if name in row:
                return row[name]
        if name in st.top:
            return st.top[name]
        if name in st.rows:
            return [""] * len(st.rows[name]) if st.table_relevant.get(name, True) else []
        owner = st._owner.get(name)
        if owner is None:
            return ""
        return [r[name] for r in st.rows[owner]] if st.table_relevant.get(owner, True) else []

    def current(self) -> str:
        return self._current

    def position(self) -> int:
        return self.row + 1

    def today(self) -> str:
        return self.state.today


def calculated(field: FormField, result: formexpr.Value) -> str:
    """A calculation's result as the field's value reads in expressions ('' for NaN)."""
    if field.type in ("number", "integer"):
        n = formexpr.to_number(result)
        if math.isnan(n) or math.isinf(n):
            return ""
        if field.type == "integer":
            n = float(math.trunc(n))
        return formexpr.number_string(n)
    if isinstance(result, float) and (math.isnan(result) or math.isinf(result)):
        return ""
    return formexpr.to_string(result)


def _same_as_computed(field: FormField, value: Any, computed: str) -> bool:
    if computed == "":
        return value is None or value == ""
    if field.type in ("number", "integer"):
        return (
            not isinstance(value, bool)
            and isinstance(value, int | float)
            and (formexpr.number_string(float(value)) == computed)
        )
    return bool(value == computed)


def _check_row(
    fields: list[FormField],
    row: Any,
    where: str,
    problems: list[str],
    blobs: set[str],
    bad: set[str],
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
        problem = _check_value(field, value, where)
        if problem:
            problems.append(problem)
            bad.add(f"{where}{field.name}")
        elif field.type in BLOB_TYPES and isinstance(value, str):
            blobs.add(value)


def _check_logic_row(
    state: FormState,
    fields: list[FormField],
    row: dict[str, Any],
    table: str | None,
    index: int,
    where: str,
    complete: bool,
    problems: list[str],
    bad: set[str],
) -> None:
    lang = state.form.message_language()
    if table is None:
        values, relevant = state.top, state.top_relevant
    else:
        values, relevant = state.rows[table][index], state.row_relevant[table][index]
    for f in fields:
        value = row.get(f.name)
        label = f"{where}{f.name!r}"
        if f"{where}{f.name}" in bad:
            continue  # its shape is wrong: that is the problem to fix first
        if not relevant.get(f.name, True):
            if value is not None:
                problems.append(
                    f"{label} is not asked here (its relevance is false) and must be left empty"
                )
            continue
        if f.calculation:
            computed = values[f.name]
            if (complete or value is not None) and not _same_as_computed(f, value, computed):
                problems.append(f"{label} must be {computed!r}, the value its calculation gives")
            continue
        missing = _missing(f, value)
        if complete and f.required is not False and missing:
            required = f.required is True or formexpr.to_bool(
                state.eval(str(f.required), table, index, values[f.name])
            )
            if required:
                message = text_of(f.required_message, lang)
                problems.append(f"{label}: {message}" if message else f"{label} is required")
                continue
        if f.constraint and not missing:
            ok = formexpr.to_bool(state.eval(f.constraint, table, index, values[f.name]))
            if not ok:
                message = text_of(f.constraint_message, lang)
                problems.append(
                    f"{label}: {message}"
                    if message
                    else f"{label} is not allowed by its constraint {f.constraint!r}"
                )


def _uses_logic(form: FormDefinition) -> bool:
    return (
        bool(form.groups)
        or any(f.expressions() for f in [*form.fields, *(f for t in form.tables for f in t.fields)])
        or any(t.relevant for t in form.tables)
    )


def _required_problems(
    form: FormDefinition,
    record: dict[str, Any],
    tables: dict[str, Any],
    complete: bool,
    bad: set[str],
) -> list[str]:
    """A form without logic: only the plain required answers (what FormState would find)."""
    if not complete:
        return []
    lang = form.message_language()
    out: list[str] = []

    def check(fields: list[FormField], row: dict[str, Any], where: str) -> None:
        for f in fields:
            if (
                f.required is True
                and f"{where}{f.name}" not in bad
                and _missing(f, row.get(f.name))
            ):
                message = text_of(f.required_message, lang)
                label = f"{where}{f.name!r}"
                out.append(f"{label}: {message}" if message else f"{label} is required")

    check(form.fields, record, "field ")
    for t in form.tables:
        for i, row in enumerate(tables.get(t.name) or []):
            check(t.fields, row, f"{t.name} row {i + 1} field ")
    return out


def _uses_today(form: FormDefinition) -> bool:
    exprs = [
        e
        for f in [*form.fields, *(f for t in form.tables for f in t.fields)]
        for _, e in f.expressions()
    ]
    exprs += [parse_expression(g.relevant) for g in form.groups if g.relevant]
    exprs += [parse_expression(t.relevant) for t in form.tables if t.relevant]
    return any("today" in e.calls for e in exprs)


def _logic_problems(
    form: FormDefinition,
    record: dict[str, Any],
    tables: dict[str, Any],
    complete: bool,
    today: date,
    bad: set[str],
) -> list[str]:
    state = FormState(form, record, tables, today.isoformat())
    problems: list[str] = []
    _check_logic_row(state, form.fields, record, None, 0, "field ", complete, problems, bad)
    for t in form.tables:
        rows = tables.get(t.name) or []
        if not state.table_relevant.get(t.name, True):
            if rows:
                problems.append(
                    f"table {t.name!r} is not asked here (its relevance is false) and must have no rows"
                )
            continue
        for i, row in enumerate(rows):
            _check_logic_row(
                state,
                t.fields,
                row,
                t.name,
                i,
                f"{t.name} row {i + 1} field ",
                complete,
                problems,
                bad,
            )
    return problems


def validate_submission(
    form: FormDefinition,
    record: Any,
    tables: Any,
    attachments: list[str] | None = None,
    *,
    complete: bool = True,
    today: date | None = None,
) -> list[str]:
    """Every problem of a submission against ``form``; empty when it is valid.

    ``complete=False`` checks a draft: answers given must fit, but required
    ones may still be missing (a crew saves a half-filled form any time; the
    ``completed`` envelope must have them all). Blob fields must name a hash
    listed in ``attachments`` (when given), so central knows every blob an
    envelope expects.

    Then the logic (docs/forms.md): an answer to a field hidden by its
    relevance is refused (the web app drops it), required-if and constraints
    apply to relevant answers with their messages, and a calculated field must
    hold what its calculation gives. ``today`` is the date ``today()`` reads:
    the envelope's own (callers pass its ``created_at``), so a replay days
    later judges it as the phone did; a phone's local date is within a day of
    UTC, so a form that reads today() passes if it does on any of those days.
    """
    problems: list[str] = []
    blobs: set[str] = set()
    bad: set[str] = set()
    _check_row(form.fields, record, "field ", problems, blobs, bad)
    if not isinstance(tables, dict):
        problems.append("tables must be an object of table name to rows")
        tables = {}
    shaped = _check_tables(form, tables, problems, blobs, bad) and isinstance(record, dict)
    if attachments is not None:
        missing = sorted(blobs - set(attachments))
        if missing:
            problems.append(
                "files used in the form are not listed in attachments: "
                + ", ".join(m[:12] + "…" for m in missing)
            )
    if not shaped:
        return problems  # the logic reads rows of answers; fix the shape first
    day = today or datetime.now(tz=_UTC).date()
    if not form.has_logic:
        return problems + _required_problems(form, record, tables, complete, bad)
    found = _logic_problems(form, record, tables, complete, day, bad)
    if found and form.reads_today:
        for other in (day.fromordinal(day.toordinal() - 1), day.fromordinal(day.toordinal() + 1)):
            if not _logic_problems(form, record, tables, complete, other, bad):
                return problems
    return problems + found


def _check_tables(
    form: FormDefinition,
    tables: dict[Any, Any],
    problems: list[str],
    blobs: set[str],
    bad: set[str],
) -> bool:
    """Check each table's rows (problems, blobs and bad answers added); whether all are rows."""
    shaped = True
    by_name = {t.name: t for t in form.tables}
    for name, rows in tables.items():
        table = by_name.get(name)
        if table is None:
            problems.append(f"table {name!r} is not part of this form")
            continue
        if not isinstance(rows, list):
            problems.append(f"table {name!r} must be a list of rows")
            shaped = False
            continue
        if len(rows) > MAX_ROWS:
            problems.append(f"table {name!r} has more than {MAX_ROWS} rows")
            shaped = False
            continue
        for i, row in enumerate(rows, start=1):
            shaped = shaped and isinstance(row, dict)
            _check_row(table.fields, row, f"{name} row {i} field ", problems, blobs, bad)
    return shaped
