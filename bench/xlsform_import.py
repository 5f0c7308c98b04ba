"""Benchmark: what importing an XLSForm costs central, against its floor.

Not a test. For workbooks of growing size (tests/data/inspection.xlsx, then
generated two-language forms of 100 and 499 questions (the form definition holds 500 fields) in groups, with a
repeat, choices and logic), times :func:`cloud_bridge.xlsform.read_xlsform`
(our checks, pyxform's reading and checks, the mapping, the form
definition's validation) against the floor: openpyxl alone reading every
cell of the same workbook (what any XLSForm reader must do). Repeated
``--repeat`` times; prints the median, the spread (min-max) and the ratio.

    .venv/bin/python bench/xlsform_import.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def generated(questions: int) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    survey = wb.active
    assert survey is not None
    survey.title = "survey"
    survey.append(
        [
            "type",
            "name",
            "label::English (en)",
            "label::Português (pt)",
            "hint::English (en)",
            "required",
            "relevant",
            "constraint",
            "constraint_message::English (en)",
        ]
    )
    n = 0
    group = 0
    while n < questions:
        survey.append(["begin group", f"g{group}", f"Section {group}", f"Seção {group}"])
        for _ in range(min(20, questions - n)):
            kind = ("text", "integer", "select_one yn", "decimal", "date")[n % 5]
            relevant = f"${{q{n - 1}}} != ''" if n % 7 == 3 else None
            constraint = ". >= 0" if kind in ("integer", "decimal") else None
            survey.append(
                [
                    kind,
                    f"q{n}",
                    f"Question {n}",
                    f"Pergunta {n}",
                    f"Hint for {n}",
                    "yes" if n % 4 == 0 else None,
                    relevant,
                    constraint,
                    "Not negative" if constraint else None,
                ]
            )
            n += 1
        survey.append(["end group"])
        group += 1
    survey.append(["begin repeat", "rows", "Rows", "Linhas"])
    survey.append(["decimal", "amount", "Amount", "Valor"])
    survey.append(["end repeat"])
    survey.append(["calculate", "total", None, None, None, None, None, None, None])
    survey.cell(row=survey.max_row, column=10, value="sum(${amount})")
    survey.cell(row=1, column=10, value="calculation")
    choices = wb.create_sheet("choices")
    choices.append(["list_name", "name", "label::English (en)", "label::Português (pt)"])
    choices.append(["yn", "yes", "Yes", "Sim"])
    choices.append(["yn", "no", "No", "Não"])
    settings = wb.create_sheet("settings")
    settings.append(["form_id", "form_title", "version"])
    settings.append([f"bench_{questions}", "Bench", "1"])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def floor(data: bytes) -> None:
    """openpyxl reading every cell of every sheet (read-only, values only)."""
    from openpyxl import load_workbook

    wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        for sheet in wb.worksheets:
            for row in sheet.iter_rows(values_only=True):
                for _ in row:
                    pass
    finally:
        wb.close()


def timed(fn: object, data: bytes, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(data)  # type: ignore[operator]
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    from cloud_bridge.xlsform import read_xlsform

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    books = [
        ("inspection.xlsx (24 rows)", (ROOT / "tests/data/inspection.xlsx").read_bytes()),
        ("100 questions", generated(100)),
        ("499 questions (the most: 500)", generated(499)),
    ]
    read_xlsform(books[0][1])  # imports and first-use caches out of the figures
    print(f"load average before: {os.getloadavg()[0]:.1f} (2 cores)")
    print(f"{'workbook':28} {'bytes':>8} {'import ms':>22} {'floor ms':>20} {'ratio':>6}")
    for name, data in books:
        imp = timed(read_xlsform, data, args.repeat)
        low = timed(floor, data, args.repeat)
        mi, ml = statistics.median(imp) * 1000, statistics.median(low) * 1000
        print(
            f"{name:28} {len(data):>8} "
            f"{mi:>8.0f} ({min(imp) * 1000:.0f}-{max(imp) * 1000:.0f}) "
            f"{ml:>8.0f} ({min(low) * 1000:.0f}-{max(low) * 1000:.0f}) "
            f"{mi / ml:>6.1f}"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
