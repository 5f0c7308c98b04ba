"""XLSForm spreadsheets (ODK's authoring format, xlsform.org) mapped onto Outpost's form.

pyxform, ODK's reference implementation of the spec, reads and checks the
workbook; this module first refuses, by sheet, row and column, whatever
Outpost's form definition cannot hold (``survey row 14, column type:
'geotrace' is not supported``), then maps pyxform's survey dictionary onto
:class:`outpost.forms.FormDefinition` (the contract in NOTES/docs/forms.md).
Nothing here touches the database: the caller stores the result in one
transaction, so a refused workbook leaves nothing behind.

Blocking (openpyxl, pyxform): run :func:`read_xlsform` in a thread.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from outpost.forms import NAME_PATTERN, FormDefinition

logger = logging.getLogger(__name__)

XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MAX_XLSX_BYTES = 1024 * 1024  # a 500-question form with two languages is ~60 KiB
MAX_UNPACKED_BYTES = 8 * 1024 * 1024  # what openpyxl may inflate (a zip bomb stops here)
MAX_ZIP_ENTRIES = 500
MAX_PROBLEMS = 25
MAX_ROWS = 2_000  # rows per sheet; FormDefinition holds at most 500 fields anyway
MAX_CELL = 4_000  # characters in one cell (labels, expressions)
MAX_CELLS = 40_000  # cells in one sheet: 2,000 rows of 20 columns

_NAME = re.compile(NAME_PATTERN)
_ROW = re.compile(r"^\s*\[row\s*:\s*(\d+)\]\s*")
_ROW_TAG = re.compile(rb"<(?:\w+:)?row[\s>/]")
_CELL_TAG = re.compile(rb"<(?:\w+:)?c[\s>/]")
_SHEET = re.compile(r"\b(?:on|in) the '(survey|choices|settings)' sheet", re.IGNORECASE)
_QUOTED = re.compile(r"'([^']{1,64})'")
_LANG_TAG = re.compile(r"\(([A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,3})\)\s*$")
_BARE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}$")  # forms.LANGUAGE_PATTERN
_DYNAMIC = re.compile(r"\$\{|^\s*[a-z][a-z0-9-]*\s*\(")

# The survey columns Outpost maps (spec name -> the names that mean it).
_SURVEY_COLUMNS = {
    "type": "type",
    "name": "name",
    "label": "label",
    "caption": "label",
    "hint": "hint",
    "required": "required",
    "required_message": "required_message",
    "jr:requiredmsg": "required_message",
    "relevant": "relevant",
    "relevance": "relevant",
    "constraint": "constraint",
    "constraint_message": "constraint_message",
    "jr:constraintmsg": "constraint_message",
    "default": "default",
    "read_only": "read_only",
    "readonly": "read_only",
    "calculation": "calculation",
    "calculate": "calculation",
    "appearance": "appearance",
}
_TRANSLATED = frozenset({"label", "hint", "required_message", "constraint_message"})
_CHOICE_COLUMNS = {"list_name": "list_name", "name": "name", "value": "name", "label": "label"}
_SETTINGS_COLUMNS = {
    "form_id": "form_id",
    "id_string": "form_id",
    "form_title": "form_title",
    "title": "form_title",
    "version": "version",
    "default_language": "default_language",
}
_UNSUPPORTED_SHEETS = ("external_choices", "entities", "osm")

# Question types (as written in the type column) -> Outpost field types.
_TYPES = {
    "text": "text",
    "string": "text",
    "integer": "integer",
    "int": "integer",
    "decimal": "number",
    "date": "date",
    "datetime": "datetime",
    "time": "time",
    "image": "attachment",
    "photo": "attachment",
    "note": "note",
    "calculate": "calculate",
    "acknowledge": "acknowledge",
    "trigger": "acknowledge",
}
_SELECTS = {  # longest first: "select one from" before "select one"
    "select all that apply from": "multichoice",
    "select all that apply": "multichoice",
    "select multiple from": "multichoice",
    "select one from": "choice",
    "select_multiple": "multichoice",
    "select_one": "choice",
    "select one": "choice",
}
_CONTROL = {"begin group", "end group", "begin repeat", "end repeat"}
# Appearances that only change how a widget looks: the crews' app has one look, so
# they are accepted and have no effect. Any other appearance changes what is
# captured (draw, annotate, numbers…) and is refused.
PRESENTATIONAL_APPEARANCES = frozenset(
    {
        "field-list",
        "minimal",
        "compact",
        "horizontal",
        "horizontal-compact",
        "likert",
        "multiline",
        "quick",
        "no-calendar",
        "table-list",
    }
)
_YES = {"yes", "true", "true()", "1"}
_NO = {"no", "false", "false()", "0"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workbook, where a form designer finds it."""

    message: str
    sheet: str | None = None
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = []
        if self.sheet:
            where.append(f"{self.sheet} row {self.row}" if self.row else f"{self.sheet} sheet")
        if self.column:
            where.append(f"column {self.column}")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def as_json(self) -> dict[str, Any]:
        return {
            "sheet": self.sheet,
            "row": self.row,
            "column": self.column,
            "message": self.message,
            "text": str(self),
        }


_SHEET_ORDER = {None: 0, "survey": 1, "choices": 2, "settings": 3}


def in_sheet_order(problems: Iterable[Problem]) -> list[Problem]:
    """Sheet by sheet, top to bottom (stable: one row's problems keep their order)."""
    return sorted(problems, key=lambda p: (_SHEET_ORDER.get(p.sheet, 4), p.row or 0))


class XlsformError(Exception):
    """The workbook is refused; ``problems`` say each thing to fix.

    ``internal``: pyxform itself failed (not one of its checks), most likely on
    something our own checks refused already.
    """

    def __init__(self, problems: Sequence[Problem], *, internal: bool = False) -> None:
        self.internal = internal
        problems = in_sheet_order(problems)
        self.problems = problems[:MAX_PROBLEMS]
        more = len(problems) - len(self.problems)
        text = "; ".join(str(p) for p in self.problems)
        super().__init__(text + (f"; and {more} more" if more > 0 else ""))
        self.message = str(self)


@dataclass(frozen=True)
class Imported:
    """A workbook as Outpost's form definition, with what its settings sheet said."""

    form: dict[str, Any]  # FormDefinition's JSON, already validated
    form_id: str | None
    title: str | None
    version: str | None
    warnings: list[str] = field(default_factory=list)


# --- the file ------------------------------------------------------------------------


def _check_archive(data: bytes) -> None:
    """Refuse what is not a small, sane .xlsx before openpyxl inflates any of it."""
    if not data:
        raise XlsformError([Problem("The upload is empty; send the .xlsx file's bytes.")])
    if len(data) > MAX_XLSX_BYTES:
        raise XlsformError(
            [
                Problem(
                    f"The spreadsheet is over {MAX_XLSX_BYTES // 1024} KiB; an XLSForm is far less."
                )
            ]
        )
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise XlsformError(
            [Problem("This is an old-style .xls workbook; save it as .xlsx (Excel 2007 or later).")]
        )
    not_xlsx = Problem("The upload is not an .xlsx workbook (an Excel 2007 or later file).")
    if not data.startswith(b"PK\x03\x04"):
        raise XlsformError([not_xlsx])
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        raise XlsformError([not_xlsx]) from None
    names = {i.filename for i in infos}
    if "[Content_Types].xml" not in names or "xl/workbook.xml" not in names:
        raise XlsformError([Problem("The upload is a ZIP archive but not an .xlsx workbook.")])
    if len(infos) > MAX_ZIP_ENTRIES or sum(i.file_size for i in infos) > MAX_UNPACKED_BYTES:
        raise XlsformError(
            [Problem(f"The workbook unpacks to more than {MAX_UNPACKED_BYTES // 2**20} MiB.")]
        )
    if any(i.flag_bits & 0x1 for i in infos):
        raise XlsformError([Problem("The workbook is encrypted; save it without a password.")])
    _check_sheet_sizes(data, infos)


def _check_sheet_sizes(data: bytes, infos: list[zipfile.ZipInfo]) -> None:
    """Count rows and cells in the sheets' XML before openpyxl parses any of it.

    openpyxl takes seconds per 10,000 cells on a Pi-class core: a 1 MiB workbook of
    60,000 rows took a minute here. Counting tags in the inflated XML is C speed.
    """
    sizes: list[tuple[int, int]] = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in infos:
                if info.filename.startswith("xl/worksheets/") and not info.is_dir():
                    xml = archive.read(info)
                    sizes.append((len(_ROW_TAG.findall(xml)), len(_CELL_TAG.findall(xml))))
    except Exception:  # noqa: BLE001 - zlib, CRC, method errors on a damaged archive: a refusal
        raise XlsformError(
            [Problem("The upload is not an .xlsx workbook (an Excel 2007 or later file).")]
        ) from None
    for rows, cells in sizes:
        if rows > MAX_ROWS + 100 or cells > MAX_CELLS:
            raise XlsformError(
                [
                    Problem(
                        f"a sheet of the workbook has {rows} rows and {cells} cells; "
                        f"an XLSForm has at most {MAX_ROWS} rows and {MAX_CELLS} cells"
                    )
                ]
            )


def _workbook(data: bytes) -> Any:
    """pyxform's reading of the sheets (its .xlsx backend only: no CSV or markdown guessing)."""
    from pyxform.errors import PyXFormError
    from pyxform.xls2json_backends import DefinitionData, xlsx_to_dict

    unreadable = Problem(
        "The workbook could not be read; open it in a spreadsheet program and save it again."
    )
    try:
        return DefinitionData(fallback_form_name=None, **xlsx_to_dict(io.BytesIO(data)))
    except PyXFormError as exc:
        logger.info("pyxform could not read an upload: %s", exc)
        raise XlsformError([unreadable]) from None
    except Exception as exc:  # noqa: BLE001 - openpyxl on a damaged part: a refusal, never a 500
        logger.info("openpyxl could not read an upload: %s", type(exc).__name__)
        raise XlsformError([unreadable]) from None


# --- the sheets as written -------------------------------------------------------------


def _split_header(header: str) -> tuple[str, str | None]:
    """``label::English (en)`` -> (``label``, ``English (en)``); aliases kept for the caller."""
    text = header.strip()
    if "::" in text:
        base, _, lang = text.partition("::")
    elif ":" in text and not text.lower().startswith("jr:"):
        base, _, lang = text.partition(":")
    else:
        base, lang = text, ""
    return "_".join(base.split()).lower(), (lang.strip() or None)


def _headers(rows: Sequence[Mapping[str, Any]] | None) -> list[str]:
    return [h for h in (rows[0] if rows else {}) if isinstance(h, str)]


def _check_columns(
    sheet: str,
    headers: Iterable[str],
    rows: Sequence[Mapping[str, Any]],
    known: Mapping[str, str],
    translated: frozenset[str],
    problems: list[Problem],
) -> None:
    """One problem per column Outpost does not map, at its first row with a value."""
    for header in headers:
        base, lang = _split_header(header)
        meaning = known.get(base)
        if meaning is not None and (lang is None or meaning in translated):
            continue
        first = next((i for i, r in enumerate(rows) if r.get(header) not in (None, "")), None)
        if first is None:
            continue  # an empty column changes nothing
        why = (
            f"'{header}' cannot have a language"
            if meaning is not None
            else f"the column '{header}' is not supported"
        )
        problems.append(Problem(why, sheet, first + 2, header))


def _type_of(raw: str) -> tuple[str, str | None]:
    """``select_one  yes_no`` -> (``select_one``, ``yes_no``); control types lower-cased."""
    words = raw.split()
    low = " ".join(words).lower()
    for spelling in _CONTROL:
        if low == spelling or low == spelling.replace(" ", "_"):
            return spelling, None
    for spelling in _SELECTS:
        n = len(spelling.split())
        if [w.lower() for w in words[:n]] == spelling.split():
            rest = words[n:]
            return spelling, " ".join(rest) if rest else ""
    return (low if low in _TYPES else " ".join(words)), None


def _by_column(
    row: Mapping[str, Any], known: Mapping[str, str] = _SURVEY_COLUMNS
) -> dict[str, Any]:
    """A row's cells by what their column means (headers are case-insensitive, aliased)."""
    out: dict[str, Any] = {}
    for header, value in row.items():
        base, lang = _split_header(str(header))
        meaning = known.get(base)
        if meaning is not None and lang is None:
            out.setdefault(meaning, value)
    return out


@dataclass
class _Row:
    number: int
    name: str | None
    kind: str  # the spelling found by _type_of


def _check_survey(rows: Sequence[Mapping[str, Any]], problems: list[Problem]) -> list[_Row]:
    """Types, names, appearances and nesting as written; the rows that define something."""
    out: list[_Row] = []
    stack: list[str] = []  # "group" / "repeat"
    for i, row in enumerate(rows):
        number = i + 2
        cells = _by_column(row)
        raw = cells.get("type")
        if not isinstance(raw, str) or not raw.strip():
            continue  # pyxform says what is wrong with a row without a type
        kind, list_name = _type_of(raw)
        name = cells.get("name")
        name = name.strip() if isinstance(name, str) else None
        if kind in _CONTROL:
            what = kind.split()[1]
            if kind.startswith("begin"):
                if what == "repeat" and "repeat" in stack:
                    problems.append(
                        Problem(
                            "a repeat inside a repeat is not supported", "survey", number, "type"
                        )
                    )
                stack.append(what)
            elif stack:
                stack.pop()
            if kind.startswith("end"):
                continue
        elif kind in _SELECTS:
            if not list_name or len(list_name.split()) != 1:
                extra = " ".join(list_name.split()[1:]) if list_name else ""
                problems.append(
                    Problem(
                        f"'{raw.strip()}' is not supported"
                        + (f" ('{extra}' after the list name)" if extra else " (no list name)"),
                        "survey",
                        number,
                        "type",
                    )
                )
        elif kind not in _TYPES:
            problems.append(
                Problem(f"'{raw.strip()[:64]}' is not supported", "survey", number, "type")
            )
            continue
        if name is not None and not _NAME.fullmatch(name):
            problems.append(
                Problem(
                    f"'{name[:64]}' must start with a lowercase letter and hold only lowercase "
                    "letters, digits and _ (at most 63)",
                    "survey",
                    number,
                    "name",
                )
            )
        _check_cells(row, kind, number, problems)
        out.append(_Row(number, name, kind))
    return out


def _check_cells(row: Mapping[str, Any], kind: str, number: int, problems: list[Problem]) -> None:
    for header, value in row.items():
        if isinstance(value, str) and len(value) > MAX_CELL:
            problems.append(
                Problem(f"holds more than {MAX_CELL} characters", "survey", number, header)
            )
        base, _ = _split_header(header)
        meaning = _SURVEY_COLUMNS.get(base)
        text = value.strip() if isinstance(value, str) else ""
        if meaning == "appearance" and text:
            for word in text.split():
                if word == "signature" and kind in ("image", "photo"):
                    continue
                if word not in PRESENTATIONAL_APPEARANCES:
                    problems.append(
                        Problem(f"'{word[:64]}' is not supported", "survey", number, header)
                    )
        elif meaning == "read_only" and text and text.lower() not in _YES | _NO:
            problems.append(
                Problem(
                    "must be yes or no (a read_only expression is not supported)",
                    "survey",
                    number,
                    header,
                )
            )
        elif meaning == "default" and text and _DYNAMIC.search(text):
            problems.append(
                Problem(
                    "a computed default is not supported; use a calculation",
                    "survey",
                    number,
                    header,
                )
            )


def _check_workbook(wb: Any) -> tuple[list[Problem], list[_Row], dict[tuple[str, str], int]]:
    problems: list[Problem] = []
    lowered = {str(n).lower() for n in (wb.sheet_names or [])}
    for sheet in _UNSUPPORTED_SHEETS:
        if sheet in lowered:
            problems.append(Problem(f"the {sheet} sheet is not supported", sheet))
    survey = list(wb.survey or [])
    choices = list(wb.choices or [])
    settings = list(wb.settings or [])
    for sheet, rows in (("survey", survey), ("choices", choices)):
        if len(rows) > MAX_ROWS:
            problems.append(Problem(f"has more than {MAX_ROWS} rows", sheet))
    if problems:
        return problems, [], {}
    _check_columns(
        "survey", _headers(wb.survey_header), survey, _SURVEY_COLUMNS, _TRANSLATED, problems
    )
    _check_columns(
        "choices",
        _headers(wb.choices_header),
        choices,
        _CHOICE_COLUMNS,
        frozenset({"label"}),
        problems,
    )
    _check_columns(
        "settings", _headers(wb.settings_header), settings, _SETTINGS_COLUMNS, frozenset(), problems
    )
    rows = _check_survey(survey, problems)
    choice_rows: dict[tuple[str, str], int] = {}
    for i, row in enumerate(choices):
        cells = _by_column(row, _CHOICE_COLUMNS)
        key = (str(cells.get("list_name", "")).strip(), str(cells.get("name", "")).strip())
        choice_rows.setdefault(key, i + 2)
    return problems, rows, choice_rows


# --- pyxform's own errors ----------------------------------------------------------------


def _translate(exc: BaseException, headers: Iterable[str] = ()) -> Problem:
    """pyxform's ``[row : 14] On the 'survey' sheet, …`` said as our problems are."""
    text = " ".join(str(exc).split())
    row = None
    m = _ROW.match(text)
    if m:
        row = int(m.group(1))
        text = text[m.end() :]
    sheet_match = _SHEET.search(text)
    sheet = sheet_match.group(1).lower() if sheet_match else ("survey" if row else None)
    if sheet_match and sheet_match.start() == 0:
        text = text[sheet_match.end() :].lstrip(" ,")
        text = text[:1].lower() + text[1:]
    known = set(headers)
    column = None
    for quoted in _QUOTED.findall(text):
        base, _ = _split_header(quoted)
        if quoted in known or base in _SURVEY_COLUMNS or base in _CHOICE_COLUMNS:
            column = quoted
            break
    return Problem(text[:500] or type(exc).__name__, sheet, row, column)


def _pyxform(wb: Any, warnings: list[str]) -> dict[str, Any]:
    """pyxform's survey dictionary, after its own checks (names, references, nesting)."""
    from pyxform.builder import create_survey_element_from_dict
    from pyxform.errors import PyXFormError
    from pyxform.xls2json import workbook_to_json

    try:
        data: dict[str, Any] = workbook_to_json(workbook_dict=wb, warnings=warnings)
        # pyxform's survey (its structural checks). Not its XForm: writing the XML was
        # half the import's time, and every ${name} is resolved by FormDefinition.
        create_survey_element_from_dict(data)
    except PyXFormError as exc:
        headers = [*_headers(wb.survey_header), *_headers(wb.choices_header)]
        raise XlsformError([_translate(exc, headers)]) from None
    except RecursionError:
        raise XlsformError([Problem("groups are nested too deeply", "survey")]) from None
    except Exception as exc:  # noqa: BLE001 - pyxform on a workbook it did not expect: a refusal
        logger.info("pyxform failed on an upload: %r", exc)
        raise XlsformError(
            [Problem(f"pyxform could not read the form: {_translate(exc)}")], internal=True
        ) from None
    return data


# --- the mapping ---------------------------------------------------------------------------


_TRANSLATABLE_KEYS = frozenset({"label", "hint", "jr:constraintMsg", "jr:requiredMsg"})


def _language_names(node: Any, out: dict[str, None]) -> None:
    """Every language pyxform saw, in order of first use (``default``: no ::language)."""
    if isinstance(node, list):
        for item in node:
            _language_names(item, out)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in _TRANSLATABLE_KEYS and isinstance(value, dict):
                out.update(dict.fromkeys(str(k) for k in value))
            elif (key == "bind" and isinstance(value, dict)) or key in ("children", "choices"):
                _language_names(value, out)


class _Languages:
    """pyxform's language names (``English (en)``) as tags (``en``).

    A form written without ``::language`` columns has plain string labels; one
    with languages has ``{tag: text}`` labels, and a column without a language
    counts as the default language (settings ``default_language``, else the first).
    """

    def __init__(self, survey: Mapping[str, Any], default_name: str | None) -> None:
        names: dict[str, None] = {}
        _language_names(survey, names)
        self.problems: list[Problem] = []
        explicit = [n for n in names if n != "default"]
        if len(explicit) == 1 and not _LANG_TAG.search(explicit[0]):
            # One language, named without a code (label::English): plain labels need none.
            self.tags = {explicit[0]: "default"}
            self.languages: list[str] = []
        else:
            self.tags = {n: self._tag(n) for n in explicit}
            self.languages = list(dict.fromkeys(self.tags.values()))
        self.default: str | None = None
        if self.languages and default_name and default_name != "default":
            self.default = self.tags.get(default_name) or self._tag(default_name)
        elif self.languages:
            self.default = self.languages[0]

    def _tag(self, name: str) -> str:
        m = _LANG_TAG.search(name)
        tag = m.group(1) if m else name.strip()
        if not _BARE_TAG.fullmatch(tag):
            self.problems.append(
                Problem(
                    f"the language '{name[:64]}' has no code: name it like "
                    "label::English (en), with the code in brackets",
                    "survey",
                    1,
                    f"label::{name[:64]}",
                )
            )
        return tag

    def label(self, value: Any) -> Any:
        if value is None or value == "":
            return None
        if not isinstance(value, dict):
            return str(value)
        if not self.languages:  # a form in one language without a code
            texts = [str(t) for t in value.values() if t not in (None, "")]
            return texts[0] if texts else None
        out: dict[str, str] = {}
        for key, text in value.items():
            if key != "default" and text not in (None, ""):
                out[self.tags.get(str(key), str(key))] = str(text)
        plain = value.get("default")
        if plain not in (None, ""):
            if not self.languages:
                return str(plain)
            out.setdefault(self.default or self.languages[0], str(plain))
        return out or None


def _yes(value: Any) -> bool | None:
    text = str(value).strip().lower()
    return True if text in _YES else False if text in _NO else None


def _default(kind: str, raw: Any, where: Problem) -> Any:
    text = str(raw).strip()
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
        if kind == "multichoice":
            return text.split()
        if kind == "acknowledge":
            return _yes(text) or text == "OK"
    except ValueError:
        raise XlsformError(
            [Problem(f"{text[:64]!r} is not a {kind} value", where.sheet, where.row, "default")]
        ) from None
    return text


@dataclass
class _Mapper:
    rows: list[_Row]
    choice_rows: dict[tuple[str, str], int]
    languages: _Languages
    problems: list[Problem] = field(default_factory=list)
    # where each mapped thing came from: pydantic's loc prefix -> (sheet row)
    places: dict[tuple[Any, ...], int] = field(default_factory=dict)
    lists: dict[tuple[Any, ...], str] = field(default_factory=dict)  # loc -> choice list
    groups: list[dict[str, Any]] = field(default_factory=list)
    _next: int = 0

    def row_of(self, name: str) -> int | None:
        """The survey row of the next element named ``name`` (pyxform keeps their order)."""
        for i in range(self._next, len(self.rows)):
            if self.rows[i].name == name:
                self._next = i + 1
                return self.rows[i].number
        return next((r.number for r in self.rows if r.name == name), None)

    def form(self, survey: Mapping[str, Any]) -> dict[str, Any]:
        fields: list[dict[str, Any]] = []
        tables: list[dict[str, Any]] = []
        self._children(survey.get("children", []), None, None, fields, tables, ("fields",))
        return {"fields": fields, "tables": tables}

    def _children(
        self,
        children: Iterable[Mapping[str, Any]],
        group: str | None,
        relevant: str | None,
        fields: list[dict[str, Any]],
        tables: list[dict[str, Any]] | None,
        at: tuple[Any, ...],
    ) -> None:
        for child in children:
            kind = child.get("type")
            name = str(child.get("name", ""))
            if kind == "group" and name == "meta" and (child.get("control") or {}).get("bodyless"):
                continue  # pyxform's own instanceID: Outpost's envelope has its id
            row = self.row_of(name)
            if kind == "group":
                self._group(child, name, row, group, relevant, fields, tables, at)
            elif kind == "repeat":
                self._table(child, name, row, group, fields, tables, at)
            else:
                mapped = self._field(child, name, row, group)
                if mapped is not None:
                    if row is not None:
                        self.places[(*at, len(fields))] = row
                    fields.append(mapped)

    def _group(
        self,
        child: Mapping[str, Any],
        name: str,
        row: int | None,
        outer: str | None,
        outer_relevant: str | None,
        fields: list[dict[str, Any]],
        tables: list[dict[str, Any]] | None,
        at: tuple[Any, ...],
    ) -> None:
        own = (child.get("bind") or {}).get("relevant")
        relevant = (
            f"({outer_relevant}) and ({own})" if outer_relevant and own else (own or outer_relevant)
        )
        entry: dict[str, Any] = {"name": name, "label": self.languages.label(child.get("label"))}
        if relevant:
            entry["relevant"] = relevant
        if row is not None:
            self.places[("groups", len(self.groups))] = row
        # A group inside a group is flattened: its own section, shown when both are.
        self.groups.append({k: v for k, v in entry.items() if v is not None})
        self._children(child.get("children", []), name, relevant, fields, tables, at)

    def _table(
        self,
        child: Mapping[str, Any],
        name: str,
        row: int | None,
        group: str | None,
        fields: list[dict[str, Any]],
        tables: list[dict[str, Any]] | None,
        at: tuple[Any, ...],
    ) -> None:
        if tables is None:  # _check_survey said so with its row; pyxform kept it
            return
        index = len(tables)
        table: dict[str, Any] = {"name": name}
        label = self.languages.label(child.get("label"))
        hint = self.languages.label(child.get("hint"))
        relevant = (child.get("bind") or {}).get("relevant")
        for key, value in (
            ("label", label),
            ("hint", hint),
            ("relevant", relevant),
            ("group", group),
        ):
            if value:
                table[key] = value
        if row is not None:
            self.places[("tables", index)] = row
        table_fields: list[dict[str, Any]] = []
        self._children(
            child.get("children", []), None, None, table_fields, None, ("tables", index, "fields")
        )
        table["fields"] = table_fields
        tables.append(table)

    def _field(
        self, child: Mapping[str, Any], name: str, row: int | None, group: str | None
    ) -> dict[str, Any] | None:
        kind = str(child.get("type", ""))
        bind = child.get("bind") or {}
        where = Problem("", "survey", row)
        outpost = _outpost_type(kind, child.get("control") or {})
        if outpost not in set(_TYPES.values()) | {"choice", "multichoice", "signature", "datetime"}:
            # _check_survey refused it already, unless pyxform made it from another spelling
            self.problems.append(Problem(f"'{kind}' is not supported", "survey", row, "type"))
            return None
        out: dict[str, Any] = {"name": name, "type": outpost}
        lang = self.languages
        for key, value in (
            ("label", lang.label(child.get("label"))),
            ("hint", lang.label(child.get("hint"))),
        ):
            if value:
                out[key] = value
        out.update(_binding(lang, bind))
        if child.get("default") not in (None, ""):
            out["default"] = _default(outpost, child["default"], where)
        if group:
            out["group"] = group
        if outpost in ("choice", "multichoice"):
            choices = child.get("choices") or []
            out["options"] = [str(c.get("name", "")) for c in choices]
            labels = {str(c.get("name", "")): lang.label(c.get("label")) for c in choices}
            labels = {k: v for k, v in labels.items() if v}
            if labels:
                out["option_labels"] = labels
        return out


def _outpost_type(kind: str, control: Mapping[str, Any]) -> str:
    """The Outpost field type of an XLSForm question type (a signature is a photo's appearance)."""
    outpost = {
        "select one": "choice",
        "select all that apply": "multichoice",
        "photo": "attachment",
        "dateTime": "datetime",
        "decimal": "number",
    }.get(kind, kind)
    if outpost == "attachment" and "signature" in str(control.get("appearance", "")).split():
        return "signature"
    return outpost


def _binding(lang: _Languages, bind: Mapping[str, Any]) -> dict[str, Any]:
    """What a question's bind says: required (or required-if), its messages, the expressions."""
    out: dict[str, Any] = {}
    required = bind.get("required")
    if required not in (None, ""):
        yes = _yes(required)
        if yes is None:
            out["required"] = str(required)  # required-if
        elif yes:
            out["required"] = True
    for key, source in (
        ("required_message", "jr:requiredMsg"),
        ("constraint_message", "jr:constraintMsg"),
    ):
        value = lang.label(bind.get(source))
        if value:
            out[key] = value
    for key, source in (
        ("relevant", "relevant"),
        ("constraint", "constraint"),
        ("calculation", "calculate"),
    ):
        if bind.get(source) not in (None, ""):
            out[key] = str(bind[source])
    if _yes(bind.get("readonly", "")):
        out["read_only"] = True
    return out


_COLUMN_OF = {
    "calculation": "calculation",
    "option_labels": "label",
    "options": "name",
    "read_only": "read_only",
}


def _place(loc: tuple[Any, ...], mapper: _Mapper) -> Problem | None:
    """Where in the workbook a pydantic error about ``loc`` points."""
    for cut in range(len(loc), 0, -1):
        row = mapper.places.get(tuple(loc[:cut]))
        if row is None:
            continue
        rest = [k for k in loc[cut:] if isinstance(k, str)]
        attr = rest[0] if rest else None
        if attr in ("options", "option_labels") and len(rest) > 1:
            return Problem("", "choices", None, _COLUMN_OF[attr])
        return Problem("", "survey", row, _COLUMN_OF.get(attr or "", attr))
    if loc and loc[0] in ("title",):
        return Problem("", "settings", 2, "form_title")
    if len(loc) == 1 and loc[0] in ("fields", "tables", "groups"):
        return Problem("", "survey")
    return None


_NAMED = re.compile(r"\b(?:field|table|group) '([a-z][a-z0-9_]{0,62})'")
_SETTING = re.compile(r": (relevant|constraint|calculation|required|default)\b")


def _place_named(message: str, mapper: _Mapper) -> Problem | None:
    """A form-wide check names its field (``field 'x': relevant …``): that field's row."""
    named = _NAMED.findall(message)
    if not named:
        return None
    row = next((r.number for r in mapper.rows if r.name == named[-1]), None)
    if row is None:
        return None
    setting = _SETTING.search(message)
    column = setting.group(1) if setting else None
    return Problem("", "survey", row, "calculation" if column == "calculation" else column)


def _validate(form: dict[str, Any], mapper: _Mapper) -> dict[str, Any]:
    from cloud_bridge.form_errors import problems as form_problems

    try:
        checked = FormDefinition.model_validate(form, strict=True)
    except ValidationError as exc:
        out: list[Problem] = []
        for err in exc.errors()[:MAX_PROBLEMS]:
            loc = tuple(err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            place = _place(loc, mapper) or _place_named(msg, mapper)
            ctx = err.get("ctx") or {}
            if err["type"] == "too_long" and len(loc) == 1:  # fields, tables, groups
                msg = (
                    f"has {ctx.get('actual_length')} {loc[0]}; a form holds at most "
                    f"{ctx.get('max_length')}"
                )
            if place is None:
                out.append(Problem(msg))
            else:
                out.append(Problem(msg, place.sheet, place.row, place.column))
        if not out:
            out = [Problem(p) for p in form_problems(form, exc)]
        raise XlsformError(out) from None
    return checked.model_dump(mode="json", exclude_none=True)


def _settings(wb: Any) -> dict[str, str]:
    raw = (wb.settings or [{}])[0] if wb.settings else {}
    out: dict[str, str] = {}
    for header, value in raw.items():
        meaning = _SETTINGS_COLUMNS.get(_split_header(str(header))[0])
        if meaning and value not in (None, ""):
            out[meaning] = str(value).strip()
    return out


def read_xlsform(data: bytes) -> Imported:
    """The workbook's form as Outpost's definition, or :class:`XlsformError` with every problem."""
    _check_archive(data)
    wb = _workbook(data)
    problems, rows, choice_rows = _check_workbook(wb)
    warnings: list[str] = []
    try:
        survey = _pyxform(wb, warnings)
    except XlsformError as exc:
        raise XlsformError(
            problems if problems and exc.internal else [*problems, *exc.problems]
        ) from None
    if not rows:
        problems.append(Problem("has no questions", "survey"))
    if problems:
        raise XlsformError(problems)
    settings = _settings(wb)
    languages = _Languages(survey, settings.get("default_language"))
    mapper = _Mapper(rows, choice_rows, languages)
    try:
        form = mapper.form(survey)
    except XlsformError as exc:
        raise XlsformError([*mapper.problems, *exc.problems]) from None
    problems = languages.problems + mapper.problems
    if problems:
        raise XlsformError(problems)
    if mapper.groups:
        form["groups"] = mapper.groups
    title = settings.get("form_title")
    if title:
        form["title"] = title
    if languages.languages:
        form["languages"] = languages.languages
        if languages.default:
            form["default_language"] = languages.default
    return Imported(
        form=_validate(form, mapper),
        form_id=settings.get("form_id"),
        title=title,
        version=settings.get("version"),
        warnings=warnings,
    )


def iter_problems(exc: XlsformError) -> Iterator[str]:
    """Each problem as one line (the page lists them)."""
    for p in exc.problems:
        yield str(p)


# The 400 body's shape, for the OpenAPI document.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["message", "text"],
    "properties": {
        "sheet": {"type": ["string", "null"], "examples": ["survey"]},
        "row": {"type": ["integer", "null"], "examples": [14]},
        "column": {"type": ["string", "null"], "examples": ["type"]},
        "message": {"type": "string", "examples": ["'geotrace' is not supported"]},
        "text": {
            "type": "string",
            "examples": ["survey row 14, column type: 'geotrace' is not supported"],
        },
    },
}
XLSFORM_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "examples": ["invalid_xlsform"]},
                "message": {"type": "string"},
                "problems": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/XlsformProblem"},
                },
            },
        }
    },
}
