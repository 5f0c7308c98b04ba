"""The form-logic expression language: the XLSForm / ODK XPath subset.

One grammar and one set of rules, written twice: here (the gateway and central
check a submission) and in ``gateway/web/static/js/formexpr.js`` (the crew's
web app evaluates live). ``tests/data/form_logic_conformance.json`` holds
expressions, form states and expected values that both must reproduce. Why a
small parser of our own and not lxml/elementpath: docs/forms.md ("Why our own
evaluator").

Values are XPath 1.0's: string, number (float), boolean, and a node-set (a
list of strings: a field of a repeat referenced from outside it). Coercions
follow XPath 1.0 as JavaRosa applies them, plus JavaRosa's reading of dates as
numbers (days since 1970-01-01) so ``${visit} <= today()`` works.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from outpost.jsregex import JsRegexError, compile_js, search_js

MAX_EXPRESSION = 2_000  # characters of one expression
MAX_NODES = 400  # parsed nodes of one expression
MAX_DEPTH = 40  # nesting of one expression

Value = str | float | bool | list[str]


class ExpressionError(ValueError):
    """An expression that does not parse or names what does not exist."""


# -- parsing ---------------------------------------------------------------

_TOKEN = re.compile(
    r"""[ \t\r\n]*(?:
      (?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)
    | (?P<str>'[^']*'|"[^"]*")
    | (?P<ref>\$\{(?P<refname>[^}]*)\})
    | (?P<op>!=|<=|>=|\.\.|[=<>+\-*(),.])
    | (?P<name>[A-Za-z_][A-Za-z0-9_\-]*(?::[A-Za-z_][A-Za-z0-9_\-]*)?)
    )""",
    re.VERBOSE,
)
_REF_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

# Node shapes (tuples, cheap and immutable):
#   ("num", float) ("str", str) ("ref", name) ("self",) ("parent",)
#   ("call", name, (args...)) ("bin", op, left, right) ("neg", operand)
Node = tuple[object, ...]

# name -> (least, most) arguments; most None = any number.
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "selected": (2, 2),
    "count-selected": (1, 1),
    "if": (3, 3),
    "concat": (0, None),
    "string-length": (0, 1),
    "regex": (2, 2),
    "today": (0, 0),
    "sum": (1, 1),
    "count": (1, 1),
    "position": (0, 1),
    "number": (0, 1),
    "string": (0, 1),
    "boolean": (1, 1),
    "not": (1, 1),
    "true": (0, 0),
    "false": (0, 0),
    "contains": (2, 2),
    "starts-with": (2, 2),
    "ends-with": (2, 2),
    "substr": (2, 3),
    "int": (1, 1),
    "round": (1, 2),
    "coalesce": (2, 2),
}
_KEYWORD_OPS = {"and", "or", "div", "mod"}


@dataclass(frozen=True)
class Expression:
    """A parsed expression: its text as written, its tree and the names it reads."""

    text: str
    tree: Node
    refs: frozenset[str]
    calls: frozenset[str]


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    end = len(text.rstrip(_WS))
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ExpressionError(f"unexpected {text[pos:].strip()[:20]!r} at character {pos + 1}")
        pos = m.end()
        kind = m.lastgroup
        if kind == "ref" or m.group("refname") is not None:
            name = m.group("refname")
            if not _REF_NAME.fullmatch(name):
                raise ExpressionError(f"${{{name}}} is not a field name")
            out.append(("ref", name))
        elif m.group("num") is not None:
            out.append(("num", m.group("num")))
        elif m.group("str") is not None:
            out.append(("str", m.group("str")[1:-1]))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        else:
            name = m.group("name")
            out.append(("kw" if name in _KEYWORD_OPS else "name", name))
    out.append(("end", ""))
    return out


class _Parser:
    # Binding powers, XPath 1.0's order: or < and < = != < relational < + - < * div mod.
    BINARY = {
        "or": 1,
        "and": 2,
        "=": 3,
        "!=": 3,
        "<": 4,
        "<=": 4,
        ">": 4,
        ">=": 4,
        "+": 5,
        "-": 5,
        "*": 6,
        "div": 6,
        "mod": 6,
    }

    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.nodes = 0

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def node(self, *parts: object) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ExpressionError(f"is too long (more than {MAX_NODES} parts)")
        return tuple(parts)

    def parse(self) -> Node:
        tree = self.expr(0, 0)
        kind, val = self.peek()
        if kind != "end":
            raise ExpressionError(f"unexpected {val!r} after a complete expression")
        return tree

    def expr(self, min_power: int, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"nests deeper than {MAX_DEPTH} levels")
        left = self.unary(depth)
        while True:
            kind, val = self.peek()
            power = self.BINARY.get(val) if kind in ("op", "kw") else None
            if power is None or power <= min_power:
                return left
            self.take()
            right = self.expr(power, depth + 1)
            left = self.node("bin", val, left, right)

    def unary(self, depth: int) -> Node:
        kind, val = self.peek()
        if kind == "op" and val == "-":
            self.take()
            return self.node("neg", self.unary(depth + 1))
        return self.primary(depth)

    def primary(self, depth: int) -> Node:
        kind, val = self.take()
        if kind == "num":
            return self.node("num", float(val))
        if kind == "str":
            return self.node("str", val)
        if kind == "ref":
            return self.node("ref", val)
        if kind == "op" and val == ".":
            return self.node("self")
        if kind == "op" and val == "..":
            return self.node("parent")
        if kind == "op" and val == "(":
            inner = self.expr(0, depth + 1)
            if self.take() != ("op", ")"):
                raise ExpressionError("a '(' is not closed")
            return inner
        if kind == "name":
            if self.peek() != ("op", "("):
                raise ExpressionError(
                    f"{val!r} is not understood: refer to a field as ${{name}}, "
                    "or call a function with ( )"
                )
            self.take()
            name = val.removeprefix("jr:")
            if name not in FUNCTIONS:
                raise ExpressionError(f"{val}() is not a supported function")
            args: list[Node] = []
            if self.peek() != ("op", ")"):
                while True:
                    args.append(self.expr(0, depth + 1))
                    if self.peek() == ("op", ","):
                        self.take()
                        continue
                    break
            if self.take() != ("op", ")"):
                raise ExpressionError(f"{val}( is not closed")
            least, most = FUNCTIONS[name]
            if len(args) < least or (most is not None and len(args) > most):
                want = str(least) if least == most else f"{least} to {most or 'any'}"
                raise ExpressionError(f"{val}() takes {want} arguments, got {len(args)}")
            return self.node("call", name, tuple(args))
        if kind == "end":
            raise ExpressionError("ends where a value was expected")
        raise ExpressionError(f"unexpected {val!r} where a value was expected")


def _walk(tree: Node, refs: set[str], calls: set[str]) -> None:
    tag = tree[0]
    if tag == "ref":
        refs.add(str(tree[1]))
    elif tag == "call":
        calls.add(str(tree[1]))
        for arg in tree[2]:  # type: ignore[attr-defined]
            _walk(arg, refs, calls)
    elif tag == "bin":
        _walk(tree[2], refs, calls)  # type: ignore[arg-type]
        _walk(tree[3], refs, calls)  # type: ignore[arg-type]
    elif tag == "neg":
        _walk(tree[1], refs, calls)  # type: ignore[arg-type]


def _check_parent(tree: Node, inside_position: bool = False) -> None:
    tag = tree[0]
    if tag == "parent" and not inside_position:
        raise ExpressionError("'..' is only supported as position(..)")
    if tag == "call":
        for arg in tree[2]:  # type: ignore[attr-defined]
            _check_parent(arg, tree[1] == "position")
    elif tag == "bin":
        _check_parent(tree[2])  # type: ignore[arg-type]
        _check_parent(tree[3])  # type: ignore[arg-type]
    elif tag == "neg":
        _check_parent(tree[1])  # type: ignore[arg-type]


# A group that ends in a repeat and is itself repeated: (a+)+, (\w*)*, (x+){2,} …
# Python's re backtracks exponentially on those (the gateway would hang on one answer).
_NESTED_REPEAT = re.compile(r"\((?:[^()\\]|\\.)*[+*}]\)(?:[+*]|\{\d*,)")


def _check_regex_literals(tree: Node) -> None:
    tag = tree[0]
    if tag == "call":
        args = tree[2]
        if tree[1] == "regex" and args[1][0] == "str":  # type: ignore[index]
            pattern = str(args[1][1])  # type: ignore[index]
            try:
                compile_js(pattern)
            except JsRegexError as exc:
                raise ExpressionError(
                    f"regex pattern {pattern!r} does not compile as JavaScript reads it: {exc}"
                ) from None
            except re.error as exc:
                raise ExpressionError(
                    f"regex pattern {pattern!r} does not compile: {exc}"
                ) from None
            if _NESTED_REPEAT.search(pattern):
                raise ExpressionError(
                    f"regex pattern {pattern!r} repeats a repeated group, which can take "
                    "exponential time on a long answer; rewrite it without the nesting"
                )
        for arg in args:  # type: ignore[attr-defined]
            _check_regex_literals(arg)
    elif tag == "bin":
        _check_regex_literals(tree[2])  # type: ignore[arg-type]
        _check_regex_literals(tree[3])  # type: ignore[arg-type]
    elif tag == "neg":
        _check_regex_literals(tree[1])  # type: ignore[arg-type]


def parse(text: str) -> Expression:
    """Parse ``text``; raises ExpressionError with a readable reason."""
    if len(text) > MAX_EXPRESSION:
        raise ExpressionError(f"is longer than {MAX_EXPRESSION} characters")
    if not text.strip(_WS):
        raise ExpressionError("is empty")
    tree = _Parser(text).parse()
    _check_parent(tree)
    _check_regex_literals(tree)
    refs: set[str] = set()
    calls: set[str] = set()
    _walk(tree, refs, calls)
    return Expression(text, tree, frozenset(refs), frozenset(calls))


# -- values and coercions ----------------------------------------------------

_NUMBER = re.compile(r"^[ \t\r\n]*(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))[ \t\r\n]*$")
_DATE = re.compile(r"^[ \t\r\n]*([0-9]{4})-([0-9]{2})-([0-9]{2})[ \t\r\n]*$")
_DATETIME = re.compile(
    r"^[ \t\r\n]*[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?[ \t\r\n]*$"
)
_EPOCH = date(1970, 1, 1)
# XML's whitespace (XPath's), not Unicode's: the same characters in Python and JavaScript.
_WS = " \t\r\n"
_SPLIT = re.compile(r"[ \t\r\n]+")
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


def to_number(v: Value) -> float:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, float):
        return v
    if isinstance(v, list):
        v = v[0] if v else ""
    m = _NUMBER.fullmatch(v)
    if m:
        return float(m.group(1))
    m = _DATE.fullmatch(v)
    if m:
        try:
            return float((date(int(m[1]), int(m[2]), int(m[3])) - _EPOCH).days)
        except ValueError:
            return math.nan
    if _DATETIME.fullmatch(v):
        try:
            when = datetime.fromisoformat(v.strip(_WS))
        except ValueError:
            return math.nan
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        # Whole milliseconds over a day's, the same division JavaScript's Date makes.
        return ((when - _EPOCH_UTC) // timedelta(milliseconds=1)) / 86_400_000
    return math.nan


def number_string(n: float) -> str:
    """A number as JavaScript's String(n) writes it (the web app's rule too)."""
    if math.isnan(n):
        return "NaN"
    if math.isinf(n):
        return "Infinity" if n > 0 else "-Infinity"
    if n == int(n) and abs(n) < 1e21:
        return str(int(n))
    text = repr(n)
    if "e" not in text:
        return text
    mantissa, exp = text.split("e")
    power = int(exp)
    if -7 < power < 21:  # JS writes these positionally
        digits = mantissa.replace(".", "").lstrip("-")
        sign = "-" if n < 0 else ""
        point = mantissa.lstrip("-").find(".")
        point = len(mantissa.lstrip("-")) if point < 0 else point
        pos = point + power
        if pos <= 0:
            return sign + "0." + "0" * (-pos) + digits
        return sign + digits[:pos] + "." + digits[pos:] if pos < len(digits) else sign + digits
    return f"{mantissa}e{'+' if power > 0 else '-'}{abs(power)}"


def to_string(v: Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return number_string(v)
    if isinstance(v, list):
        return v[0] if v else ""
    return v


def to_bool(v: Value) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, float):
        return not (v == 0 or math.isnan(v))
    if isinstance(v, list):
        return bool(v)
    return v != ""


# -- evaluation ----------------------------------------------------------------


class Scope(Protocol):
    """What an expression reads: field values and where it is evaluated."""

    def value(self, name: str) -> str | list[str]: ...
    def current(self) -> str: ...
    def position(self) -> int: ...
    def today(self) -> str: ...


def _compare(op: str, a: Value, b: Value) -> bool:
    if isinstance(a, list) or isinstance(b, list):
        # XPath: a node-set compares true when any of its members does.
        if isinstance(a, bool) or isinstance(b, bool):
            return _compare(op, to_bool(a), to_bool(b))
        left: list[Value] = list(a) if isinstance(a, list) else [a]
        right: list[Value] = list(b) if isinstance(b, list) else [b]
        return any(_compare(op, x, y) for x in left for y in right)
    if op in ("=", "!="):
        if isinstance(a, bool) or isinstance(b, bool):
            same = to_bool(a) == to_bool(b)
        elif isinstance(a, float) or isinstance(b, float):
            same = to_number(a) == to_number(b)
        else:
            same = a == b
        return same if op == "=" else not same
    x, y = to_number(a), to_number(b)
    if op == "<":
        return x < y
    if op == "<=":
        return x <= y
    if op == ">":
        return x > y
    return x >= y


def _arith(op: str, x: float, y: float) -> float:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op == "div":
        if y == 0:
            if x == 0 or math.isnan(x):
                return math.nan
            return math.inf if (x > 0) == (math.copysign(1, y) > 0) else -math.inf
        return x / y
    # mod: JavaScript's %, the sign of the dividend.
    if y == 0 or math.isinf(x) or math.isnan(x) or math.isnan(y):
        return math.nan
    if math.isinf(y):
        return x
    return math.fmod(x, y)


def _tokens_of(text: str) -> list[str]:
    return [t for t in _SPLIT.split(text) if t]


def _regex(text: str, pattern: str) -> bool:
    # Read as the web app's ``new RegExp(pattern)`` reads it (outpost/jsregex.py).
    return search_js(pattern, text)


def _float_floor(v: float) -> float:
    return float(math.floor(v)) if math.isfinite(v) else v


def _round(x: float, places: float) -> float:
    """XPath's round (half up), to ``places`` decimals; IEEE all the way, as in JavaScript."""
    if math.isnan(x) or math.isinf(x) or math.isnan(places):
        return x
    # 10^p parsed from its decimal ("1e-5"): correctly rounded here and in
    # JavaScript alike (V8's 10 ** -5 is 0.000009999999999999999).
    if math.isinf(places):
        scale = math.inf if places > 0 else 0.0
    else:
        scale = float(f"1e{math.trunc(places)}")
    return _arith("div", _float_floor(x * scale + 0.5), scale)


def _index(v: float, n: int) -> int:
    """A JavaScript slice index: truncated, ±Infinity clamped to the ends, negative from the end."""
    i = int(max(-n, min(n, v)))
    return max(0, n + i) if i < 0 else i


def _substr(s: str, start: float, end: float | None) -> str:
    chars = list(s)
    n = len(chars)
    a = 0 if math.isnan(start) else _index(start, n)
    b = n if end is None or math.isnan(end) else _index(end, n)
    return "".join(chars[a:b])


def _call(name: str, args: Sequence[Node], scope: Scope) -> Value:
    ev: Callable[[Node], Value] = lambda node: evaluate(node, scope)  # noqa: E731
    if name == "if":
        return ev(args[1]) if to_bool(ev(args[0])) else ev(args[2])
    vals = [ev(a) for a in args] if name != "position" else []
    if name == "selected":
        return to_string(vals[1]).strip(_WS) in _tokens_of(to_string(vals[0]))
    if name == "count-selected":
        return float(len(_tokens_of(to_string(vals[0]))))
    if name == "concat":
        return "".join("".join(v) if isinstance(v, list) else to_string(v) for v in vals)
    if name == "string-length":
        return float(len(to_string(vals[0]) if vals else scope.current()))
    if name == "regex":
        return _regex(to_string(vals[0]), to_string(vals[1]))
    if name == "today":
        return scope.today()
    if name == "sum":
        items = vals[0] if isinstance(vals[0], list) else [vals[0]]
        total = 0.0
        for item in items:  # left to right, as JavaScript adds (not fsum)
            total += to_number(item)
        return total
    if name == "count":
        return float(len(vals[0])) if isinstance(vals[0], list) else 1.0
    if name == "position":
        return float(scope.position())
    if name == "number":
        return to_number(vals[0] if vals else scope.current())
    if name == "string":
        return to_string(vals[0]) if vals else scope.current()
    if name == "boolean":
        return to_bool(vals[0])
    if name == "not":
        return not to_bool(vals[0])
    if name == "true":
        return True
    if name == "false":
        return False
    if name == "contains":
        return to_string(vals[1]) in to_string(vals[0])
    if name == "starts-with":
        return to_string(vals[0]).startswith(to_string(vals[1]))
    if name == "ends-with":
        return to_string(vals[0]).endswith(to_string(vals[1]))
    if name == "substr":
        end = to_number(vals[2]) if len(vals) > 2 else None
        return _substr(to_string(vals[0]), to_number(vals[1]), end)
    if name == "int":
        x = to_number(vals[0])
        return x if math.isnan(x) or math.isinf(x) else float(math.trunc(x))
    if name == "round":
        return _round(to_number(vals[0]), to_number(vals[1]) if len(vals) > 1 else 0.0)
    if name == "coalesce":
        return vals[0] if to_string(vals[0]) != "" else vals[1]
    raise ExpressionError(f"{name}() is not a supported function")  # parse() refuses these


def evaluate(tree: Node, scope: Scope) -> Value:
    tag = tree[0]
    if tag == "num":
        return tree[1]  # type: ignore[return-value]
    if tag == "str":
        return tree[1]  # type: ignore[return-value]
    if tag == "ref":
        return scope.value(str(tree[1]))
    if tag == "self":
        return scope.current()
    if tag == "parent":
        return ""
    if tag == "neg":
        return -to_number(evaluate(tree[1], scope))  # type: ignore[arg-type]
    if tag == "call":
        return _call(str(tree[1]), tree[2], scope)  # type: ignore[arg-type]
    op = str(tree[1])
    left, right = tree[2], tree[3]
    if op == "or":
        return to_bool(evaluate(left, scope)) or to_bool(evaluate(right, scope))  # type: ignore[arg-type]
    if op == "and":
        return to_bool(evaluate(left, scope)) and to_bool(evaluate(right, scope))  # type: ignore[arg-type]
    a = evaluate(left, scope)  # type: ignore[arg-type]
    b = evaluate(right, scope)  # type: ignore[arg-type]
    if op in ("=", "!=", "<", "<=", ">", ">="):
        return _compare(op, a, b)
    return _arith(op, to_number(a), to_number(b))
