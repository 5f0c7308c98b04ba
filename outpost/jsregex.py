"""``regex()`` patterns read as JavaScript reads them, for Python's ``re``.

The crews' app evaluates ``regex(text, pattern)`` with ``new RegExp(pattern)``
(no flags: not unicode-aware, ECMAScript Annex B syntax); the gateway and
central use Python's ``re``. The two dialects read the same pattern
differently in places a form's designer meets (measured: docs/forms.md,
"regex() is JavaScript's"), so the Python side rewrites each pattern into the
``re`` pattern that matches what JavaScript matches:

- ``$`` is the end of the text (``re``'s also matches before a final newline);
- ``.`` matches anything but ``\\n``, ``\\r``, U+2028 and U+2029 (``re``'s only
  excludes ``\\n``);
- ``\\s`` / ``\\S`` are JavaScript's Unicode whitespace (NBSP, U+2000..U+200A,
  U+FEFF …), not ASCII's; ``\\d``, ``\\w``, ``\\b`` stay ASCII (``re.ASCII``);
- an escaped letter JavaScript has no escape for is that letter (``\\Z``,
  ``\\A``, ``\\a``, ``\\e``, ``\\z``, ``\\p`` …), ``\\cJ`` is a control character,
  a lone ``]`` or ``{,2}`` is literal, ``[]`` matches nothing and ``[^]`` anything;
- named groups are ``(?<name>…)`` and ``\\k<name>``;
- text and pattern are compared as UTF-16 code units, as JavaScript does
  (``.`` is half of an emoji).

Syntax only Python reads (``(?P<n>…)``, inline flags ``(?i)``, comments
``(?#…)``, atomic groups, possessive ``a++``) is a JavaScript syntax error:
:class:`JsRegexError`, so the pattern matches nothing on either side. What
is left different is listed in docs/forms.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# JavaScript's WhiteSpace and LineTerminator code points (ECMA-262 \s).
_JS_SPACE = "\\t\\n\\v\\f\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
_JS_DOT = "[^\\n\\r\\u2028\\u2029]"
_NAME = re.compile(r"<([A-Za-z_$][A-Za-z0-9_$]*)>")
_QUANT_BRACE = re.compile(r"\{(\d+)(,(\d*))?\}")
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
# Escapes both dialects read alike (``\b`` inside a class is backspace in both).
_SAME = set("dDwWbtnvfr0")
_CLASS_ESCAPES = set("dDwWsS")  # a class escape as a range's end makes "-" literal (Annex B)
_DIGITS = re.compile(r"[0-9]+")
_OCTAL = re.compile(r"[0-3][0-7]{0,2}|[4-7][0-7]?")


class JsRegexError(ValueError):
    """The pattern is not valid JavaScript (``new RegExp`` would throw)."""


def utf16(text: str) -> str:
    """``text`` as JavaScript sees it: one character per UTF-16 code unit."""
    if all(ord(c) <= 0xFFFF for c in text):
        return text
    units = text.encode("utf-16-le", "surrogatepass")
    return "".join(chr(int.from_bytes(units[i : i + 2], "little")) for i in range(0, len(units), 2))


@lru_cache(maxsize=512)
def compile_js(pattern: str) -> re.Pattern[str]:
    """The ``re`` pattern that matches what ``new RegExp(pattern)`` matches.

    Raises :class:`JsRegexError` (JavaScript would throw) or ``re.error``.
    """
    js = utf16(pattern)
    return re.compile(_translate(js, _Groups.of(js)), re.ASCII)


def search_js(pattern: str, text: str) -> bool:
    """``new RegExp(pattern).test(text)``; False when JavaScript would throw."""
    try:
        compiled = compile_js(pattern)
    except (JsRegexError, re.error):
        return False
    return compiled.search(utf16(text)) is not None


@dataclass(frozen=True)
class _Groups:
    """The capturing groups of a pattern: what a ``\\1`` or ``\\k<name>`` may refer to."""

    count: int
    names: frozenset[str]

    @classmethod
    def of(cls, p: str) -> _Groups:
        count, names, i, in_class = 0, set(), 0, False
        while i < len(p):
            c = p[i]
            if c == "\\":
                i += 2
                continue
            if in_class:
                in_class = c != "]"
            elif c == "[":
                for empty in ("[]", "[^]"):  # no class follows: nothing to skip
                    if p.startswith(empty, i):
                        i += len(empty)
                        break
                else:
                    in_class = True
                    i += 2 if p.startswith("[^", i) else 1
                continue
            elif c == "(":
                named = _NAME.match(p, i + 2) if p.startswith("(?", i) else None
                if named is not None:
                    names.add(named.group(1))
                count += named is not None or not p.startswith("(?", i)
            i += 1
        return cls(count, frozenset(names))


def _translate(p: str, groups: _Groups) -> str:
    out: list[str] = []
    i, n = 0, len(p)
    in_class = False
    quantified = False  # the last thing written was a quantifier
    assertion = False  # ... or ^, $, \b, \B, a lookbehind (JavaScript cannot repeat those)
    opened: list[bool] = []  # the groups open, True for a lookbehind
    not_space, class_at = False, 0  # the open class holds \S; where it starts in ``out``
    while i < n:
        c = p[i]
        was_quantified, quantified = quantified, False
        was_assertion, assertion = assertion, False
        if c == "\\":
            if i + 1 >= n:
                raise JsRegexError("\\ at end of pattern")
            letter = p[i + 1]
            piece, i = _escape(p, i + 1, in_class, groups)
            if in_class and letter == "S":
                not_space = True  # said when the class closes
            else:
                out.append(piece)
            assertion = not in_class and letter in "bB"  # \b, \B: nothing to repeat
            continue
        if in_class:
            if c == "]":
                in_class = False
                out.append("]")
                if not_space:
                    out[class_at:] = [
                        _with_not_space(out[class_at], "".join(out[class_at + 1 : -1]))
                    ]
            elif c in "[&~|":  # literal in JavaScript; re warns of set operations
                out.append("\\" + c)
            elif c == "-" and (_after_class_escape(p, i) or _class_escape_at(p, i + 1)):
                out.append("\\-")  # [\d-z]: no range in JavaScript, a "-"
            else:
                out.append(c)
            i += 1
            continue
        if c == "[":
            if p.startswith("[]", i):
                out.append("(?!)")  # an empty class: matches nothing
                i += 2
            elif p.startswith("[^]", i):
                out.append("(?s:.)")  # any character at all
                i += 3
            else:
                in_class, not_space, class_at = True, False, len(out)
                start = 2 if p.startswith("[^", i) else 1
                out.append(p[i : i + start])
                i += start
            continue
        if c == "]":
            out.append("\\]")
        elif c in "^$":
            out.append("^" if c == "^" else "\\Z")
            assertion = True
        elif c == ".":
            out.append(_JS_DOT)
        elif c == "(":
            group, i = _group(p, i)
            opened.append(group.startswith("(?<=") or group.startswith("(?<!"))
            out.append(group)
            continue
        elif c == ")":
            # A lookbehind is an assertion (JavaScript repeats only lookaheads).
            assertion = opened.pop() if opened else False
            out.append(c)
        elif c in "*+?" or (c == "{" and _QUANT_BRACE.match(p, i) and was_assertion):
            if was_assertion:
                raise JsRegexError("nothing to repeat (an assertion)")
            if was_quantified and c == "+":
                raise JsRegexError("nothing to repeat (a possessive quantifier)")
            # "a*?" is lazy in both; a "?" after a quantifier is not one itself.
            quantified = not (was_quantified and c == "?")
            out.append(c)
        elif c == "{":
            m = _QUANT_BRACE.match(p, i)
            if m is None:
                out.append("\\{")  # not a quantifier: literal, as in JavaScript
            else:
                out.append(m.group(0))
                quantified = True
                i = m.end()
                continue
        else:
            out.append(c)
        i += 1
    if in_class:
        raise JsRegexError("missing /] at the end of a character class")
    return "".join(out)


def _with_not_space(opening: str, members: str) -> str:
    """A class that holds ``\\S`` (JavaScript's non-space), which ``re`` cannot say inside one."""
    if members.startswith("^"):
        members = "\\" + members
    if opening == "[^":  # neither a member nor a non-space: a space that is not a member
        return f"(?![{members}])[{_JS_SPACE}]" if members else f"[{_JS_SPACE}]"
    return f"(?:[{members}]|[^{_JS_SPACE}])" if members else f"[^{_JS_SPACE}]"


def _after_class_escape(p: str, i: int) -> bool:
    return i >= 2 and p[i - 2] == "\\" and p[i - 1] in _CLASS_ESCAPES and not _escaped(p, i - 2)


def _class_escape_at(p: str, i: int) -> bool:
    return p.startswith("\\", i) and i + 1 < len(p) and p[i + 1] in _CLASS_ESCAPES


def _escaped(p: str, i: int) -> bool:
    """Whether ``p[i]`` is itself escaped (an odd run of backslashes before it)."""
    run = 0
    while i - run - 1 >= 0 and p[i - run - 1] == "\\":
        run += 1
    return run % 2 == 1


def _escape(p: str, i: int, in_class: bool, groups: _Groups) -> tuple[str, int]:
    """The ``re`` text for the escape whose letter is at ``p[i]``, and where to go on."""
    d = p[i]
    if d in _SAME:
        return "\\" + d, i + 1
    if d in "123456789":
        digits = _DIGITS.match(p, i)
        assert digits is not None
        if not in_class and int(digits.group(0)) <= groups.count:
            return f"(?:\\{digits.group(0)})", digits.end()  # a backreference
        octal = _OCTAL.match(p, i)
        if octal is None:  # \8, \9: the digit itself (Annex B)
            return d, i + 1
        return re.escape(chr(int(octal.group(0), 8))), octal.end()  # a legacy octal escape
    if d == "s":
        return (_JS_SPACE if in_class else f"[{_JS_SPACE}]"), i + 1
    if d == "S":  # inside a class the class is rewritten when it closes (_with_not_space)
        return ("" if in_class else f"[^{_JS_SPACE}]"), i + 1
    if d == "c":
        if i + 1 < len(p) and p[i + 1].isascii() and p[i + 1].isalpha():
            return re.escape(chr(ord(p[i + 1]) % 32)), i + 2
        return "\\\\c", i + 1  # Annex B: a backslash and a "c"
    if d == "x" and _HEX2.match(p, i + 1):
        return "\\x" + p[i + 1 : i + 3], i + 3
    if d == "u" and _HEX4.match(p, i + 1):
        return "\\u" + p[i + 1 : i + 5], i + 5
    if d == "B":
        # Not a boundary; re's \B does not match in an empty text, JavaScript's does.
        return ("B" if in_class else "(?!\\b)"), i + 1
    if d == "k" and groups.names:  # without named groups "\k" is a "k" (Annex B)
        m = _NAME.match(p, i + 1)
        if m is None or m.group(1) not in groups.names:
            raise JsRegexError("invalid named reference")
        return ("k" if in_class else f"(?P={m.group(1)})"), (i + 1 if in_class else m.end())
    # An identity escape: the character itself.
    return re.escape(d), i + 1


def _group(p: str, i: int) -> tuple[str, int]:
    """An opening parenthesis at ``p[i]``: the ``re`` text for it, and where to go on."""
    if not p.startswith("(?", i):
        return "(", i + 1
    for same in ("(?:", "(?=", "(?!", "(?<=", "(?<!"):
        if p.startswith(same, i):
            return same, i + len(same)
    m = _NAME.match(p, i + 2)
    if m is not None:
        return f"(?P<{m.group(1)}>", m.end()
    raise JsRegexError(f"invalid group {p[i : i + 4]!r}")
