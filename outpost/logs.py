"""Logging set-up shared by every Outpost command.

One readable line per record. Under systemd (``$JOURNAL_STREAM`` names our
stderr) each line starts with the syslog priority ``<N>``, which journald
turns into the entry's level (``journalctl -p warning`` works) — and the
timestamp is left to journald. Elsewhere a line carries its own time and level.

Secrets never reach a log line: code logs paths, ids and sizes, never
tokens, passwords, keys or payloads.

A message never spans lines: control characters in it (a request path with
``%0A``, a username with a newline) are written escaped (``\\n``, ``\\x1b``),
so logged user input cannot forge a line. Only a traceback (``exc_info``)
runs over several lines, as itself.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
_MAX_LINE = 4000  # one record, one journal entry of sane size

_QUIET = {  # libraries that chatter at INFO
    "aiohttp.access": logging.WARNING,
    "apscheduler": logging.WARNING,
}


# C0 controls, DEL, C1 controls, and the Unicode line/paragraph separators.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    0x09: "\\t",
    0x0A: "\\n",
    0x0D: "\\r",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def escape_control(text: str) -> str:
    """``text`` with every control character written as an escape (one line, no ANSI)."""
    return text.translate(_ESCAPES)


class _OneLine(logging.Formatter):
    """One header line per record: the message is escaped; a traceback is indented.

    An exception's text can carry user input too, so every line after the
    first starts with whitespace: nothing inside a record can pass for the
    start of another.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        first, *rest = super().format(record).split("\n")
        return "\n".join([first, *(line if line[:1].isspace() else "  " + line for line in rest)])


class _MalformedRequests(logging.Filter):
    """aiohttp logs a client's malformed HTTP (a NUL in a header) as an ERROR with a
    traceback; it is the client's bad input, answered 400: one INFO line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        try:
            from aiohttp.http_exceptions import HttpProcessingError
        except ImportError:  # pragma: no cover - every Outpost command has aiohttp
            return True
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            first = str(exc.message).strip().splitlines()
            record.msg = "refused a malformed HTTP request (%s): %s"
            record.args = (exc.code, first[0] if first else type(exc).__name__)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def _syslog_priority(levelno: int) -> int:
    for level, prio in sorted(_PRIORITY.items(), reverse=True):
        if levelno >= level:
            return prio
    return 7


class JournalFormatter(_OneLine):
    """``<N>logger: message`` — journald parses the prefix into PRIORITY=N."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = _syslog_priority(record.levelno)
        # A multi-line message (a traceback) must stay one entry per line
        # with the same level, or journald files the tail as "info".
        return "\n".join(f"<{prio}>{line}" for line in text[:_MAX_LINE].splitlines() or [""])


def _plain_formatter() -> logging.Formatter:
    return _OneLine("%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def stderr_is_journal(
    environ: Mapping[str, str] | None = None, stream: TextIO | None = None
) -> bool:
    """True when ``$JOURNAL_STREAM`` (``dev:inode``) is the stream we write to."""
    environ = os.environ if environ is None else environ
    stream = sys.stderr if stream is None else stream
    raw = environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = raw.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        return False


def parse_level(level: str | int) -> int:
    """``"info"``/``"DEBUG"``/``20`` → a logging level; ValueError names the bad value."""
    if isinstance(level, int):
        return level
    value = logging.getLevelNamesMapping().get(level.strip().upper())
    if value is None:
        raise ValueError(f"unknown log level {level!r} (use debug, info, warning or error)")
    return value


def setup_logging(
    level: str | int = "info",
    *,
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure the root logger once, for a command's ``main()``.

    ``OUTPOST_LOG_LEVEL`` in the environment, when set, wins over ``level``.
    """
    environ = os.environ if environ is None else environ
    stream = sys.stderr if stream is None else stream
    root = logging.getLogger()
    root.setLevel(parse_level(environ.get("OUTPOST_LOG_LEVEL") or level))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        JournalFormatter() if stderr_is_journal(environ, stream) else _plain_formatter()
    )
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _MalformedRequests) for f in server.filters):
        server.addFilter(_MalformedRequests())
    if root.level > logging.DEBUG:
        for name, quiet in _QUIET.items():
            logging.getLogger(name).setLevel(quiet)
    logging.captureWarnings(True)
