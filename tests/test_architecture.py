"""The layout rules of docs/architecture.md, checked on the source: small modules, small folders, no
import circles, no private names imported across modules, ``import emzoo`` stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "emzoo"
MAX_LINES = 500
MAX_MODULES_PER_FOLDER = 12


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of emzoo."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """``(imported module, imported names)`` for every import in the module (also inside functions
    and ``TYPE_CHECKING`` blocks: a circle there is still a circle for the reader)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((module, [alias.name for alias in node.names]))
    return found


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, names in _imports(name, path):
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES] or [module]
            for target in targets:
                if target in MODULES and target != name:
                    graph[name].add(target)
    return graph


def test_no_module_over_the_line_limit():
    long = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


def test_no_folder_with_too_many_modules():
    counts = {}
    for folder in [PACKAGE, *(p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
        counts[str(folder.relative_to(PACKAGE.parent))] = len(
            [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        )
    assert {f: k for f, k in counts.items() if k > MAX_MODULES_PER_FOLDER} == {}


def test_no_import_circles():
    graph = _edges()
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert circles == []


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_names_imported_across_modules():
    private = []
    for name, path in MODULES.items():
        for module, names in _imports(name, path):
            if not module.startswith("emzoo"):
                continue
            private += [f"{name}: from {module} import {n}" for n in names if _is_private(n)]
            if any(_is_private(part) for part in module.split(".")):
                private.append(f"{name}: import {module}")
    assert private == []


@pytest.mark.parametrize("heavy", ["torch", "onnxruntime", "bioimageio.spec", "bioimageio.core"])
def test_import_emzoo_stays_light(heavy):
    code = f"import sys, emzoo, emzoo.cli; print({heavy!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
