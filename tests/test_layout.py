"""The package layout: imports point down the layers, no cycles, small files.

Every ``import`` statement of the library is read from the source (module level and inside
functions alike), so a cycle cannot hide behind a function-level import.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "tfchannelprune"
MAX_LINES = 400

# Lower rank = lower layer. A module may import from its own area or from lower ranks only.
RANKS = {
    "errors": 0,
    "_keras": 1,
    "core": 2,
    "datasets": 2,
    "saliency": 3,
    "deploy": 3,
    "dead": 4,
    "prune": 5,
    "dynamic": 5,
    "gaze": 6,
    "cli": 7,
    "__init__": 8,
    "__main__": 8,
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The library module an import name refers to (a module, or the package it names)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: pathlib.Path) -> set[str]:
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "tfchannelprune":
                continue
            target = _resolve(name)
            if target and target != module:
                found.add(target)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_area_has_a_rank():
    assert {_area(m) for m in MODULES} <= set(RANKS), sorted({_area(m) for m in MODULES})


def test_imports_point_down():
    upward = []
    for module, targets in GRAPH.items():
        for target in targets:
            a, b = _area(module), _area(target)
            if a != b and RANKS[b] >= RANKS[a]:
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_no_import_cycle():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(t) :] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_cycle_detection_sees_function_level_imports(tmp_path):
    source = "def f():\n    from tfchannelprune.core import graph\n"
    (tmp_path / "m.py").write_text(source)
    tree = ast.parse(source)
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))
    assert "tfchannelprune.core.graph" in _imports("tfchannelprune.core.rules", tmp_path / "m.py")


def test_few_top_level_modules():
    top = [p.name for p in ROOT.glob("*.py")]
    assert len(top) <= 12, top


@pytest.mark.parametrize("module", sorted(MODULES))
def test_library_file_is_small(module):
    lines = MODULES[module].read_text().count("\n")
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines (limit {MAX_LINES})"
