"""What a newcomer reads first stays true: the README and docs point only at files
in the repository, and the example configs pass ``check-config`` and name every key."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from cloud_bridge.config import BridgeConfig
from gateway.config import GatewayConfig

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent


def _targets(doc: Path) -> list[tuple[str, Path]]:
    """(target, what it is relative to): a link is relative to its document, a file
    named in backticks (`docs/x.md`) to the repository's root."""
    text = doc.read_text(encoding="utf-8")
    links = [(t, doc.parent) for t in re.findall(r"\]\(([^)\s]+)\)", text)]
    named = re.findall(r"`((?:\.\./|docs/|[\w.-]+\.example\.toml)[^`\s]*)`", text)
    return [
        (t.split("#")[0], base)
        for t, base in links + [(n, ROOT) for n in named]
        if not re.match(r"[a-z]+://|#|mailto:", t)
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_file_a_document_points_at_is_in_the_repository(doc: Path) -> None:
    for target, base in _targets(doc):
        path = (base / target).resolve()
        assert path.is_relative_to(ROOT), f"{doc.name} points outside the repository: {target}"
        assert path.exists(), f"{doc.name} points at {target}, which does not exist"


def test_the_readme_says_how_long_the_tests_take() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"`make test` takes about \d+", readme)


def _keys(model: type[BaseModel]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, field in model.model_fields.items():
        section = field.annotation
        assert isinstance(section, type) and issubclass(section, BaseModel)
        out[name] = list(section.model_fields)
    return out


@pytest.mark.parametrize(
    ("example", "command", "model"),
    [
        ("gateway.example.toml", "outpost-gateway", GatewayConfig),
        ("bridge.example.toml", "outpost-bridge", BridgeConfig),
    ],
)
def test_the_example_configs_pass_check_config_and_name_every_key(
    example: str, command: str, model: type[BaseModel]
) -> None:
    path = ROOT / example
    done = subprocess.run(
        [str(BIN / command), "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},  # no OUTPOST_* overrides from the caller
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "config OK" in done.stdout
    text = path.read_text(encoding="utf-8")
    active = tomllib.loads(text)
    # Each key is set or shown commented out with its default, under its [section].
    sections = re.split(r"^\[(\w+)\]\s*$", text, flags=re.MULTILINE)
    by_section = dict(zip(sections[1::2], sections[2::2], strict=True))
    for section, keys in _keys(model).items():
        assert section in by_section, f"{example} has no [{section}] section"
        body = by_section[section]
        for key in keys:
            shown = re.search(rf"^#?\s*{key}\s*=", body, flags=re.MULTILINE)
            assert shown, f"{example}: [{section}] {key} is neither set nor shown commented out"
        for key in active.get(section, {}):
            assert key in keys, f"{example}: [{section}] {key} is not a key"


def test_every_rejection_code_is_in_central_docs() -> None:
    """A new code in cloud_bridge/rejections.py cannot ship without its meaning."""
    from cloud_bridge import rejections

    codes = {v for k, v in vars(rejections).items() if k.isupper() and isinstance(v, str)}
    table = (ROOT / "docs" / "central.md").read_text()
    missing = sorted(c for c in codes if f"| `{c}` |" not in table)
    assert not missing, f"docs/central.md lists no meaning for {missing}"
