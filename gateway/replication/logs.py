"""litestream's log lines (logfmt) as a logging level and a readable message."""

from __future__ import annotations

import logging
import re

MAX_LINE = 500

_LEVEL_RE = re.compile(r"\blevel=(\w+)")
_MSG_RE = re.compile(r'\bmsg=("(?:[^"\\]|\\.)*"|\S+)')
_TIME_RE = re.compile(r"\btime=\S+\s*")


def _unquote(value: str) -> str:
    if value.startswith('"') and value.endswith('"'):
        return value[1:-1].replace('\\"', '"')
    return value


def parse_log_line(line: str) -> tuple[int, str]:
    """(logging level, message) of a litestream log line: ``msg`` first, then its attributes."""
    text = line.strip()[:MAX_LINE]
    level_m = _LEVEL_RE.search(text)
    level_name = level_m.group(1).upper() if level_m else ""
    if text.startswith("Error:") or level_name == "ERROR":
        level = logging.ERROR
    elif level_name in ("WARN", "WARNING"):
        level = logging.WARNING
    else:
        level = logging.DEBUG  # INFO lines (compactions, snapshots) are routine
    msg_m = _MSG_RE.search(text)
    if msg_m is None:
        return level, text.removeprefix("Error: ")
    rest = _TIME_RE.sub("", text[msg_m.end() :])
    rest = _LEVEL_RE.sub("", rest).strip()
    message = _unquote(msg_m.group(1))
    return level, f"{message} {rest}" if rest else message
