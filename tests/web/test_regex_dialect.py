"""``regex()`` gives the same answer in the web app (Chromium) and in Python, on random patterns.

12,000 (pattern, text) pairs from a fixed seed, built from the pieces where
JavaScript's RegExp and Python's ``re`` read a pattern differently (``$``,
``.``, ``\\s``, escapes, classes, groups, quantifiers, astral characters),
each evaluated as ``regex(${t}, ${p})`` by the app's formexpr.js and by
outpost/formexpr.py (which reads the pattern through outpost/jsregex.py).
Without the translation about 2.4 % of them differ (measured when it was
written: 314 of these 12,000). Left out on purpose, as docs/forms.md
says: a lookbehind of variable width (Python's ``re`` cannot).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from outpost import formexpr
from tests.web.conftest import Crew, GatewayProcess

pytestmark = pytest.mark.browser

PIECES = [
    *"ab1.$^[]-()|*+?{}",
    *["[^", "(?:", "(?=", "(?!", "(?<=a)", "(?<!b)", "{2}", "{1,}", "{,2}", "&&", " "],
    *["\\s", "\\S", "\\d", "\\w", "\\b", "\\B", "\\Z", "\\A", "\\1", "\\2", "\\8", "\\0"],
    *["\\cJ", "\\cB", "\\x41", "\\u00a0", "\\k<n>", "(?<n>", "\\-", "\\]", "\\.", "\\e", "\\p"],
    *[
        "\\t",
        "[\\s]",
        "[\\S]",
        "[^\\S]",
        "[a\\S]",
        "[\\b]",
        "[\\B]",
        "(?i)",
        "(?P<n>",
        "a++",
        "$*",
        "\n",
        "\u00a0",
        "😀",
    ],
]
LETTERS = [*"ab1A -][{,2}Z\t", "\n", "\r", "\u00a0", "\u2028", "\u3000", "😀", "\x00"]


def corpus(seed: int = 1, patterns: int = 4000) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(patterns):
        pattern = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 6)))
        for _ in range(3):
            out.append((pattern, "".join(rng.choice(LETTERS) for _ in range(rng.randint(0, 5)))))
    return out


class _Values:
    def __init__(self, pattern: str, text: str) -> None:
        self.values = {"p": pattern, "t": text}

    def value(self, name: str) -> str:
        return self.values[name]

    def current(self) -> str:
        return ""

    def position(self) -> int:
        return 1

    def today(self) -> str:
        return "2026-01-01"


RUN = """
async (pairs) => {
  const x = await import("/static/js/formexpr.js");
  return pairs.map(([p, t]) => {
    const scope = {value: (n) => (n === "p" ? p : t), current: () => "", position: () => 1,
                   today: () => "2026-01-01"};
    return x.run("regex(${t}, ${p})", scope);
  });
}
"""


def test_regex_reads_alike_in_the_app_and_in_python(gateway: GatewayProcess, crew: Crew) -> None:
    pairs = corpus()
    crew.page.goto(gateway.lan_url + "/")
    in_app: list[Any] = crew.page.evaluate(RUN, [list(pair) for pair in pairs])
    tree = formexpr.parse("regex(${t}, ${p})").tree
    differ = [
        (pattern, text, got, want)
        for (pattern, text), want in zip(pairs, in_app, strict=True)
        if (got := formexpr.evaluate(tree, _Values(pattern, text))) is not want
    ]
    assert not differ, f"{len(differ)} of {len(pairs)} differ, e.g. {differ[:5]}"
