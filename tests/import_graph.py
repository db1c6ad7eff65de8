"""The package's import graph, read with ``ast``: every import counts, also those under
``TYPE_CHECKING`` and inside functions. Run as a script to print the graph's cycles and its
largest modules and classes (``python tests/import_graph.py``)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "pytest_evalrun"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The package modules ``name`` imports (the nearest known module of each target)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            if not target.startswith(PACKAGE):
                continue
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        found = set(imports_of(name, path, known))
        # a module's own parent packages are imported before it anyway: no dependency
        edges[name] = {t for t in found if not name.startswith(t + ".")}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def sizes() -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(lines, module) and (lines, class) pairs, largest first."""
    mods, classes = [], []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        mods.append((len(text.splitlines()), name))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                classes.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    return sorted(mods, reverse=True), sorted(classes, reverse=True)


def main() -> None:
    edges = graph()
    print(f"{len(edges)} modules, {sum(len(t) for t in edges.values())} import edges")
    found = cycles(edges)
    print(f"{len(found)} import cycles")
    for component in found:
        print("  cycle:", " <-> ".join(component))
    mods, classes = sizes()
    print("largest modules:", ", ".join(f"{m} {n}" for n, m in mods[:6]))
    print("largest classes:", ", ".join(f"{c} {n}" for n, c in classes[:6]))


if __name__ == "__main__":
    main()
