"""outpost.logs: readable lines, and syslog priorities when stderr is the journal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from outpost.logs import parse_level, stderr_is_journal

SNIPPET = """
import logging
from outpost.logs import setup_logging
setup_logging("info")
log = logging.getLogger("outpost.demo")
log.debug("hidden")
log.info("hello %s", "world")
log.warning("careful")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("it broke")
"""


def _run(tmp_path: Path, journal: bool, **env: str) -> list[str]:
    out = tmp_path / "stderr.txt"
    with out.open("wb") as fh:
        st = os.fstat(fh.fileno())
        environ = {**os.environ, **env}
        environ.pop("JOURNAL_STREAM", None)
        if journal:
            environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-c", SNIPPET], env=environ, stderr=fh, check=True)
    return out.read_text().splitlines()


def test_journal_lines_carry_priorities(tmp_path: Path) -> None:
    lines = _run(tmp_path, journal=True)
    assert lines[0] == "<6>outpost.demo: hello world"
    assert lines[1] == "<4>outpost.demo: careful"
    assert lines[2] == "<3>outpost.demo: it broke"
    # Every traceback line keeps the error priority: one level per record.
    assert len(lines) > 4
    assert all(line.startswith("<3>") for line in lines[2:])
    assert "hidden" not in "\n".join(lines)


def test_plain_lines_elsewhere(tmp_path: Path) -> None:
    lines = _run(tmp_path, journal=False)
    assert lines[0].endswith("INFO    outpost.demo: hello world")
    assert not lines[0].startswith("<")


def test_a_stale_journal_stream_is_ignored(tmp_path: Path) -> None:
    lines = _run(tmp_path, journal=False, JOURNAL_STREAM="1:2")
    assert not lines[0].startswith("<")


def test_level_from_environment(tmp_path: Path) -> None:
    lines = _run(tmp_path, journal=True, OUTPOST_LOG_LEVEL="debug")
    assert lines[0] == "<7>outpost.demo: hidden"


def test_parse_level() -> None:
    assert parse_level("warning") == 30
    assert parse_level(" DEBUG ") == 10
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        parse_level("loud")


def test_stderr_is_journal_needs_matching_inode(tmp_path: Path) -> None:
    f = tmp_path / "x"
    with f.open("w") as fh:
        st = os.fstat(fh.fileno())
        assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, fh)
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, fh)
        assert not stderr_is_journal({}, fh)


FORGERY = """
import logging
from urllib.parse import unquote
from outpost.logs import setup_logging
setup_logging("info")
log = logging.getLogger("gateway.api.middleware")
path = unquote("/api/v1/x%0A2026-11-23 09:00:00,000 INFO    gateway.auth: user 'admin' signed in")
log.warning("refused %s %s", "GET", path)
log.info("user %s from %s", "eve\\r\\u2028\\x1b[31m", "10.0.0.9")
try:
    raise ValueError("bad\\nvalue")
except ValueError:
    log.exception("failed on %s", path)
"""


@pytest.mark.parametrize("journal", [False, True])
def test_logged_user_input_cannot_forge_a_line(tmp_path: Path, journal: bool) -> None:
    out = tmp_path / "stderr.txt"
    with out.open("wb") as fh:
        st = os.fstat(fh.fileno())
        environ = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal:
            environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-c", FORGERY], env=environ, stderr=fh, check=True)
    text = out.read_text()
    lines = text.splitlines()
    signed_in = [line for line in lines if "signed in" in line]
    # The forged text stays inside the refusal's own line, escaped.
    assert len(signed_in) == 2  # the warning and the exception's message
    assert all("gateway.api.middleware: " in line and "x\\n2026" in line for line in signed_in)
    assert not any(
        line.lstrip("<0123456789>").startswith("2026-11-23 09:00:00,000") for line in lines
    )
    user = next(line for line in lines if "user eve" in line)
    assert "eve\\r\\u2028\\x1b[31m" in user and "\x1b" not in text
    # A traceback still reads as a traceback, one line per frame.
    # A traceback still reads as one, indented under its record: even the
    # exception's own text (user input too) cannot start a line of its own.
    body = [line.removeprefix("<3>") for line in lines if "Traceback" in line or "value" in line]
    assert "  Traceback (most recent call last):" in body
    assert "  value" in body
    header = re.compile(r"^(<\d>)?(\d{4}-\d\d-\d\d [\d:,]+ [A-Z]+ +)?[a-z_.]+: ")
    records = [line for line in lines if header.match(line)]
    assert len(records) == 3  # the three calls, nothing more
