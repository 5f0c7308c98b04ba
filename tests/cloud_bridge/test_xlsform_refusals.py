"""What the XLSForm import refuses, and how it says so: sheet, row, column, reason.

No workbook, however malformed, gets past as half a form or as an exception
other than XlsformError (the API turns that into a 4xx).
"""

from __future__ import annotations

import contextlib
import io
import zipfile

import pytest

from cloud_bridge.xlsform import MAX_XLSX_BYTES, Problem, XlsformError, read_xlsform
from tests.cloud_bridge.xlsform_books import simple, workbook


def refused(data: bytes) -> list[Problem]:
    with pytest.raises(XlsformError) as caught:
        read_xlsform(data)
    assert caught.value.problems, "a refusal names at least one problem"
    return caught.value.problems


def texts(data: bytes) -> list[str]:
    return [str(p) for p in refused(data)]


def test_the_issue_example_word_for_word() -> None:
    rows = [("text", f"q{i}", f"Q{i}") for i in range(12)]
    data = simple(*rows, ("geotrace", "route", "Route"))
    assert texts(data) == ["survey row 14, column type: 'geotrace' is not supported"]
    (problem,) = refused(data)
    assert problem.as_json() == {
        "sheet": "survey",
        "row": 14,
        "column": "type",
        "message": "'geotrace' is not supported",
        "text": "survey row 14, column type: 'geotrace' is not supported",
    }


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (("geopoint", "where", "Where"), "survey row 3, column type: 'geopoint' is not supported"),
        (("range", "score", "Score"), "survey row 3, column type: 'range' is not supported"),
        (("start", "started", ""), "survey row 3, column type: 'start' is not supported"),
        (("audio", "voice", "Voice"), "survey row 3, column type: 'audio' is not supported"),
        (("barcode", "code", "Code"), "survey row 3, column type: 'barcode' is not supported"),
        (("rank yn", "order", "Order"), "survey row 3, column type: 'rank yn' is not supported"),
        (
            ("select_one_from_file sites.csv", "site", "Site"),
            "survey row 3, column type: 'select_one_from_file sites.csv' is not supported",
        ),
        (
            ("select_one yn or_other", "pick", "Pick"),
            "survey row 3, column type: 'select_one yn or_other' is not supported "
            "('or_other' after the list name)",
        ),
        (
            ("text", "Site-Name", "Site"),
            "survey row 3, column name: 'Site-Name' must start with a lowercase letter and hold "
            "only lowercase letters, digits and _ (at most 63)",
        ),
    ],
)
def test_unsupported_types_and_names(row: tuple[str, str, str], expected: str) -> None:
    assert texts(simple(("text", "first", "First"), row)) == [expected]


def test_a_repeat_inside_a_repeat() -> None:
    data = simple(
        ("begin repeat", "visits", "Visits"),
        ("text", "who", "Who"),
        ("begin repeat", "samples", "Samples"),
        ("text", "sample", "Sample"),
        ("end repeat", "", ""),
        ("end repeat", "", ""),
    )
    assert "survey row 4, column type: a repeat inside a repeat is not supported" in texts(data)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        (
            "choice_filter",
            "x = 1",
            "survey row 3, column choice_filter: the column 'choice_filter' is not supported",
        ),
        (
            "media::image",
            "a.png",
            "survey row 3, column media::image: the column 'media::image' is not supported",
        ),
        (
            "repeat_count",
            "3",
            "survey row 3, column repeat_count: the column 'repeat_count' is not supported",
        ),
        (
            "parameters",
            "max-pixels=800",
            "survey row 3, column parameters: the column 'parameters' is not supported",
        ),
        (
            "guidance_hint",
            "Ask twice",
            "survey row 3, column guidance_hint: the column 'guidance_hint' is not supported",
        ),
        (
            "relevant::English (en)",
            "1 = 1",
            "survey row 3, column relevant::English (en): 'relevant::English (en)' cannot have a language",
        ),
        ("appearance", "numbers", "survey row 3, column appearance: 'numbers' is not supported"),
        (
            "read_only",
            "${first} = 'x'",
            "survey row 3, column read_only: must be yes or no (a read_only expression is not supported)",
        ),
        (
            "default",
            "today()",
            "survey row 3, column default: a computed default is not supported; use a calculation",
        ),
        (
            "default",
            "${first}",
            "survey row 3, column default: a computed default is not supported; use a calculation",
        ),
    ],
)
def test_unsupported_columns(column: str, value: str, expected: str) -> None:
    data = simple(
        ("text", "first", "First", ""),
        ("image" if column == "parameters" else "text", "second", "Second", value),
        header=("type", "name", "label", column),
    )
    assert texts(data) == [expected]


def test_an_unsupported_column_is_said_once_at_its_first_value() -> None:
    data = simple(
        ("text", "a", "A", ""),
        ("text", "b", "B", "x"),
        ("text", "c", "C", "y"),
        header=("type", "name", "label", "choice_filter"),
    )
    assert texts(data) == [
        "survey row 3, column choice_filter: the column 'choice_filter' is not supported"
    ]


def test_an_empty_unsupported_column_changes_nothing() -> None:
    data = simple(("text", "a", "A", ""), header=("type", "name", "label", "media::image"))
    assert not any("media" in t for t in _maybe_texts(data))


def _maybe_texts(data: bytes) -> list[str]:
    try:
        read_xlsform(data)
    except XlsformError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_appearances_that_change_what_is_captured() -> None:
    data = simple(
        ("image", "sketch", "Sketch", "draw"),
        ("image", "marked", "Marked", "annotate"),
        ("text", "long", "Long", "multiline"),  # only looks: accepted
        header=("type", "name", "label", "appearance"),
    )
    assert texts(data) == [
        "survey row 2, column appearance: 'draw' is not supported",
        "survey row 3, column appearance: 'annotate' is not supported",
    ]


def test_signature_is_an_appearance_of_image_only() -> None:
    data = simple(
        ("text", "sig", "Sign", "signature"), header=("type", "name", "label", "appearance")
    )
    assert texts(data) == ["survey row 2, column appearance: 'signature' is not supported"]


def test_other_sheets_and_settings() -> None:
    data = workbook(
        [("type", "name", "label"), ("text", "a", "A")],
        choices=[("list_name", "name", "label", "region"), ("yn", "yes", "Yes", "north")],
        settings=[("form_id", "instance_name"), ("small", "concat('x', ${a})")],
        entities=[("list_name", "label"), ("trees", "${a}")],
    )
    got = texts(data)
    assert "entities sheet: the entities sheet is not supported" in got


def test_choices_and_settings_columns() -> None:
    data = workbook(
        [("type", "name", "label"), ("select_one yn", "a", "A")],
        choices=[("list_name", "name", "label", "region"), ("yn", "yes", "Yes", "north")],
        settings=[("form_id", "instance_name"), ("small", "concat('x', ${a})")],
    )
    assert texts(data) == [
        "choices row 2, column region: the column 'region' is not supported",
        "settings row 2, column instance_name: the column 'instance_name' is not supported",
    ]


def test_a_language_without_its_code() -> None:
    data = workbook(
        [("type", "name", "label::English", "label::French"), ("text", "a", "A", "A")],
        settings=[("form_id",), ("small",)],
    )
    got = texts(data)
    assert got[0] == (
        "survey row 1, column label::English: the language 'English' has no code: name it "
        "like label::English (en), with the code in brackets"
    )


def test_pyxform_errors_keep_their_row() -> None:
    # A group that never ends: pyxform's own check, said in the same shape.
    problems = refused(simple(("begin group", "g", "G"), ("text", "a", "A")))
    assert problems[0].sheet == "survey" and problems[0].row == 2, problems
    assert "group" in problems[0].message.lower()
    # A reference to no question.
    (p,) = refused(
        simple(("text", "a", "A", "${nowhere} = 'x'"), header=("type", "name", "label", "relevant"))
    )
    assert "nowhere" in str(p), p


def test_unsupported_and_pyxform_problems_come_together() -> None:
    got = texts(simple(("geotrace", "route", "Route"), ("begin group", "g", "G")))
    assert got[0] == "survey row 2, column type: 'geotrace' is not supported"
    assert len(got) == 2 and "row 3" in got[1], got


# --- bytes that are not an XLSForm --------------------------------------------------------


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in entries.items():
            z.writestr(name, body)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "empty"),
        (b"not a spreadsheet at all", "not an .xlsx workbook"),
        (b"\x00\xff" * 500, "not an .xlsx workbook"),
        (b"type,name,label\ntext,a,A\n", "not an .xlsx workbook"),  # a CSV is not taken
        (b"| survey |\n| | type | name |\n", "not an .xlsx workbook"),  # nor markdown
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, "old-style .xls"),
        (b"PK\x03\x04" + b"\x00" * 100, "not an .xlsx workbook"),
        (_zip({"hello.txt": b"hi"}), "ZIP archive but not an .xlsx"),
        (_zip({"[Content_Types].xml": b"<x/>", "xl/workbook.xml": b"<<<"}), "could not be read"),
        (b"\x00" * (MAX_XLSX_BYTES + 1), f"over {MAX_XLSX_BYTES // 1024} KiB"),
    ],
)
def test_garbage_is_refused_with_a_sentence(data: bytes, says: str) -> None:
    (problem,) = refused(data)
    assert says in problem.message, problem


def test_a_zip_bomb_is_refused_before_it_is_inflated() -> None:
    bomb = _zip(
        {
            "[Content_Types].xml": b"<Types/>",
            "xl/workbook.xml": b"<workbook/>",
            "xl/worksheets/sheet1.xml": b"<" + b" " * (40 * 1024 * 1024) + b"/>",
        }
    )
    assert len(bomb) < 200_000
    (problem,) = refused(bomb)
    assert "unpacks to more than" in problem.message


def test_a_truncated_workbook() -> None:
    good = simple(("text", "a", "A"))
    for cut in (len(good) // 3, len(good) // 2, len(good) - 10):
        refused(good[:cut])


def test_a_workbook_whose_bytes_are_damaged() -> None:
    good = bytearray(simple(("text", "a", "A")))
    for at in range(200, len(good), max(1, len(good) // 25)):
        damaged = bytes(good[:at]) + bytes([good[at] ^ 0xFF]) + bytes(good[at + 1 :])
        with contextlib.suppress(XlsformError):
            read_xlsform(damaged)


def test_a_survey_without_a_survey() -> None:
    data = workbook([("type", "name", "label")], settings=[("form_id",), ("x",)])
    assert refused(data)


def test_what_the_form_definition_refuses_keeps_its_row() -> None:
    got = texts(
        simple(
            ("text", "a", "A", ""),
            ("date", "when", "When", "today()"),
            header=("type", "name", "label", "calculation"),
        )
    )
    assert got == ["survey row 3: field 'when': a date field cannot have a calculation"]
    got = texts(
        simple(("note", "n", "Read this", "yes"), header=("type", "name", "label", "required"))
    )
    assert got[0].startswith("survey row 2: note 'n' shows text only"), got


def test_too_many_questions() -> None:
    rows = [("text", f"q{i}", f"Q{i}") for i in range(501)]
    assert texts(simple(*rows)) == ["survey sheet: has 501 fields; a form holds at most 500"]


def test_a_huge_sheet_is_refused_before_it_is_parsed() -> None:
    import time

    rows = [("text", f"q{i}", "x") for i in range(12_000)]
    data = simple(*rows)
    started = time.perf_counter()
    (problem,) = refused(data)
    assert "has 12001 rows" in problem.message and "at most 2000 rows" in problem.message
    assert time.perf_counter() - started < 5  # counted, not parsed (parsing takes ~10 s+)
