"""The code's shape, for docs/architecture.md: lines per module, import circles, long functions.

    .venv/bin/python scripts/structure.py [lines|cycles|storage|long|all]

Import circles are the strongly connected components of the import graph of
``outpost``, ``cloud_bridge`` and ``gateway``, counting function-level
imports too (imports under ``if TYPE_CHECKING:`` never run and are not
counted). ``tests/test_structure.py`` keeps the number of circles at zero.

Storage imports: which gateway modules outside ``gateway/store/`` import a
database library (``sqlalchemy``, ``sqlite3``), at any level, type-only
imports included. All of the gateway's SQL is in ``gateway/store/`` (typed
tasks); ``tests/test_structure.py`` holds the few exceptions, each with its
reason.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("outpost", "cloud_bridge", "gateway")
LONG = 60
DATABASE_LIBRARIES = ("sqlalchemy", "sqlite3")


def modules(root: Path = ROOT) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path, mods: dict[str, Path]) -> set[str]:
    out: set[str] = set()
    is_package = path.name == "__init__.py"

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                out.update(r for a in child.names if (r := _resolve(a.name, mods)))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    name = ".".join(base + ([child.module] if child.module else []))
                else:
                    name = child.module or ""
                for alias in child.names:
                    target = f"{name}.{alias.name}"
                    r = _resolve(target if target in mods else name, mods)
                    if r:
                        out.add(r)
            walk(child)

    walk(ast.parse(path.read_text()))
    out.discard(module)
    return out


def import_cycles(root: Path = ROOT) -> list[list[str]]:
    """Each import circle (a strongly connected component of two or more modules)."""
    mods = modules(root)
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def storage_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """Gateway modules outside ``gateway/store/`` and the database libraries each imports."""
    out: dict[str, set[str]] = {}
    for module, path in modules(root).items():
        if not module.startswith("gateway.") or module.startswith("gateway.store"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top in DATABASE_LIBRARIES:
                    out.setdefault(module, set()).add(top)
    return out


def long_functions(root: Path = ROOT, limit: int = LONG) -> list[tuple[int, str]]:
    out = []
    for path in modules(root).values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > limit:
                    out.append((n, f"{path.relative_to(root)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def main(what: str = "all") -> None:
    if what in ("all", "lines"):
        mods = modules()
        total = 0
        for path in mods.values():
            n = len(path.read_text().splitlines())
            total += n
            print(f"{n:6d} {path.relative_to(ROOT)}")
        print(f"{total:6d} total, {len(mods)} modules")
    if what in ("all", "cycles"):
        cycles = import_cycles()
        print(f"import circles: {len(cycles)}")
        for c in cycles:
            print(f"  {len(c)}: {' '.join(c)}")
    if what in ("all", "storage"):
        outside = storage_imports()
        print(f"gateway modules outside gateway/store importing a database library: {len(outside)}")
        for module, libs in sorted(outside.items()):
            print(f"  {module}: {', '.join(sorted(libs))}")
    if what in ("all", "long"):
        funcs = long_functions()
        print(f"functions over {LONG} lines: {len(funcs)}")
        for n, where in funcs:
            print(f"  {n:4d} {where}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "all")
