"""A form definition as the crew will see it, for the Activity types page's preview.

Built from the stored JSON (any kept version), so it reads definitions of
every age: labels and hints as one string or one per language, options as
strings or ``{value, label}``, sections, and the logic a field carries
(relevance, constraint, required-if, calculation), said in words beside the
field. The widget follows the crews' web app: Yes/No buttons for a boolean,
buttons for a choice of up to six options and a list beyond, a photo button,
a signature pad, child tables as rows with "Add row".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHOICE_BUTTONS_MAX = 6  # the crews' web app shows buttons up to this many options


def humanize(name: str) -> str:
    """The label a field without one gets (as the crews' web app derives it)."""
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def pick(text: Any, language: str = "en") -> str | None:
    """A label or hint given as a string or per language: the best one for ``language``."""
    if text is None:
        return None
    if isinstance(text, str):
        return text
    if isinstance(text, dict) and text:
        for key in (language, language.split("-")[0], "en", "default"):
            if isinstance(text.get(key), str):
                return str(text[key])
        first = next(iter(text.values()))
        return str(first) if first is not None else None
    return str(text)


@dataclass
class Widget:
    name: str
    label: str
    kind: str  # text, number, integer, yesno, buttons, select, date, datetime, time, photo, ...
    required: bool = False
    required_if: str | None = None
    hint: str | None = None
    options: list[str] = field(default_factory=list)
    logic: list[str] = field(default_factory=list)  # "Shown when …", "Must satisfy …"
    read_only: bool = False


@dataclass
class Section:
    name: str | None
    label: str | None
    widgets: list[Widget] = field(default_factory=list)
    relevant: str | None = None  # the whole section is shown only when this holds


@dataclass
class TablePreview:
    name: str
    label: str
    widgets: list[Widget]


@dataclass
class Preview:
    sections: list[Section]
    tables: list[TablePreview]
    languages: list[str]

    @property
    def empty(self) -> bool:
        return not any(s.widgets for s in self.sections) and not self.tables


_KINDS = {
    "text": "text",
    "number": "number",
    "decimal": "number",
    "integer": "integer",
    "boolean": "yesno",
    "date": "date",
    "datetime": "datetime",
    "time": "time",
    "attachment": "photo",
    "image": "photo",
    "signature": "signature",
    "note": "note",
    "calculate": "calculate",
    "acknowledge": "acknowledge",
}


def _options(raw: Any, language: str, labels: Any = None) -> list[str]:
    """Each option as the crew reads it: its ``option_labels`` entry, else the value."""
    labels = labels if isinstance(labels, dict) else {}
    out = []
    for o in raw or []:
        if isinstance(o, dict):
            out.append(pick(o.get("label"), language) or str(o.get("value", "")))
        else:
            out.append(pick(labels.get(o), language) or str(o))
    return out


def widget(f: dict[str, Any], language: str = "en") -> Widget:
    name = str(f.get("name", "?"))
    ftype = str(f.get("type", "text"))
    options = _options(f.get("options"), language, f.get("option_labels"))
    if ftype in ("choice", "multichoice", "select_one", "select_multiple", "multiple_choice"):
        kind = "buttons" if len(options) <= CHOICE_BUTTONS_MAX else "select"
    else:
        kind = _KINDS.get(ftype, "text")
    required = f.get("required", False)
    w = Widget(
        name=name,
        label=pick(f.get("label"), language) or humanize(name),
        kind=kind,
        required=required is True,
        required_if=required if isinstance(required, str) else None,
        hint=pick(f.get("hint"), language),
        options=options,
        read_only=bool(f.get("read_only")) or ftype == "calculate",
    )
    if f.get("relevant"):
        w.logic.append(f"Shown only when {f['relevant']}")
    if w.required_if:
        w.logic.append(f"Required when {w.required_if}")
    if f.get("constraint"):
        message = pick(f.get("constraint_message"), language)
        w.logic.append(
            f"Must satisfy {f['constraint']}" + (f' (else: "{message}")' if message else "")
        )
    if f.get("calculation"):
        w.logic.append(f"Calculated: {f['calculation']}")
    if ftype in ("multichoice", "select_multiple") or f.get("multiple"):
        w.logic.append("Several options may be picked")
    return w


def _languages(form: dict[str, Any]) -> list[str]:
    found: set[str] = set()

    def see(text: Any) -> None:
        if isinstance(text, dict):
            found.update(str(k) for k in text)

    tables = [t for t in form.get("tables", []) if isinstance(t, dict)]
    declared = [str(x) for x in form.get("languages", []) or [] if isinstance(x, str)]
    for t in tables:
        see(t.get("label"))
    for f in [*form.get("fields", []), *(f for t in tables for f in t.get("fields", []))]:
        if isinstance(f, dict):
            see(f.get("label"))
            see(f.get("hint"))
    return declared + sorted(found - set(declared))


def preview(form: dict[str, Any], language: str = "en") -> Preview:
    """The crew's view of ``form`` (a stored definition), in ``language`` where it has one."""
    groups = form.get("groups") or form.get("sections") or []  # "sections": older drafts
    labels = {
        str(s.get("name")): pick(s.get("label"), language) for s in groups if isinstance(s, dict)
    }
    relevance = {
        str(s.get("name")): s.get("relevant")
        for s in groups
        if isinstance(s, dict) and isinstance(s.get("relevant"), str)
    }
    sections: list[Section] = []
    for f in form.get("fields", []):
        if not isinstance(f, dict):
            continue
        key = f.get("group") or f.get("section")
        if not sections or sections[-1].name != key:
            label = labels.get(str(key)) or (humanize(str(key)) if key else None)
            sections.append(Section(key, label, relevant=relevance.get(str(key))))
        sections[-1].widgets.append(widget(f, language))
    tables = [
        TablePreview(
            name=str(t.get("name", "?")),
            label=pick(t.get("label"), language) or humanize(str(t.get("name", "?"))),
            widgets=[widget(f, language) for f in t.get("fields", []) if isinstance(f, dict)],
        )
        for t in form.get("tables", [])
        if isinstance(t, dict)
    ]
    return Preview(sections or [Section(None, None)], tables, _languages(form))
