"""The package's import graph has no cycles, counting imports inside functions and under
``TYPE_CHECKING``: two modules that need each other are one idea split badly (docs/architecture.md).

The one allowed exception is ``Graph``'s methods in ``graph/graph.py`` delegating to the modules
of ``graph/`` (a facade: those modules do not import ``Graph`` at run time).
"""

from __future__ import annotations

import ast
from pathlib import Path

import tl_circuits

ROOT = Path(tl_circuits.__file__).parent
FACADE = "tl_circuits.graph.graph"


def _module_name(path: Path) -> str:
    parts = ["tl_circuits", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in its source), ancestors excluded."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in files:
                    name = name.rsplit(".", 1)[0] if "." in name else ""
                if name and name != module and not module.startswith(name + "."):
                    edges[module].add(name)
    edges[FACADE] = {t for t in edges.get(FACADE, set()) if not t.startswith("tl_circuits.graph.")}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(import_graph())
    assert found == [], "import cycles (move the shared piece down a layer): " + "; ".join(
        " <-> ".join(c) for c in found
    )


def test_no_private_imports_across_packages():
    """``from x import _name`` only within one package (a module's privates are its own)."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if not base.startswith("tl_circuits"):
                continue
            target_package = base if (ROOT.parent / base.replace(".", "/")).is_dir() else base.rsplit(".", 1)[0]
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and target_package != package:
                    offenders.append(f"{module}: from {base} import {alias.name}")
    assert offenders == []
