"""The import graph of outpost/, cloud_bridge/ and gateway/ has no circles (scripts/structure.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _structure() -> ModuleType:
    spec = importlib.util.spec_from_file_location("structure", ROOT / "scripts/structure.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_circles() -> None:
    assert _structure().import_cycles() == []


def test_a_circle_would_be_found(tmp_path: Path) -> None:
    for package in ("outpost", "cloud_bridge", "gateway"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "gateway/a.py").write_text("from gateway import b\n")
    (tmp_path / "gateway/b.py").write_text("def f():\n    from gateway.a import x\n")
    assert _structure().import_cycles(tmp_path) == [["gateway.a", "gateway.b"]]
