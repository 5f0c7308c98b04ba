"""outpost.logs: readable lines, and syslog priorities when stderr is the journal."""

from __future__ import annotations

import os
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
