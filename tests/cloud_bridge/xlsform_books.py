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
