"""Small XLSForm workbooks built in memory for the import tests."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openpyxl import Workbook

DATA = Path(__file__).resolve().parents[1] / "data"
INSPECTION = DATA / "inspection.xlsx"
Rows = Sequence[Sequence[Any]]


def workbook(
    survey: Rows,
    choices: Rows | None = None,
    settings: Rows | None = None,
    **sheets: Rows,
) -> bytes:
    """An .xlsx whose sheets hold these rows (the first row of each is its header)."""
    wb = Workbook()
    sheet = wb.active
    assert sheet is not None
    sheet.title = "survey"
    for row in survey:
        sheet.append(list(row))
    for title, rows in (("choices", choices), ("settings", settings), *sheets.items()):
        if rows is None:
            continue
        extra = wb.create_sheet(title)
        for row in rows:
            extra.append(list(row))
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def simple(*rows: Sequence[Any], header: Sequence[str] = ("type", "name", "label")) -> bytes:
    """A survey of ``rows`` under ``header`` with a form_id, and a yes/no list."""
    return workbook(
        [header, *rows],
        choices=[("list_name", "name", "label"), ("yn", "yes", "Yes"), ("yn", "no", "No")],
        settings=[("form_id", "form_title"), ("small", "Small")],
    )


PYXFORM = DATA / "pyxform"


def _save(wb: Any) -> bytes:
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def from_markdown(path: Path) -> bytes:
    """pyxform's markdown spelling of a workbook (its test data) as the .xlsx itself."""
    from pyxform.xls2json_backends import md_table_to_workbook

    return _save(md_table_to_workbook(path.read_text(encoding="utf-8")))


def from_csv(path: Path) -> bytes:
    """pyxform's CSV spelling (a sheet's name in the first column, its rows after) as .xlsx."""
    import csv

    wb = Workbook()
    first = wb.active
    assert first is not None
    wb.remove(first)
    sheet = None
    with path.open(encoding="utf-8", newline="") as f:
        for cells in csv.reader(f):
            if cells and cells[0].strip():
                sheet = wb.create_sheet(cells[0].strip())
                continue
            row = [c if c != "" else None for c in cells[1:]]
            while row and row[-1] is None:
                row.pop()
            if sheet is not None and row:
                sheet.append(row)
    return _save(wb)
