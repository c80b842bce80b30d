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


# Keras's training loop and private attributes: only tfchannelprune/_keras may touch them
# (issue 20: one training-step hook installer, ``_keras.add_train_step_hook``).
TRAINING_LOOP = {
    "train_step", "test_step", "predict_step", "make_train_function", "make_test_function",
    "make_predict_function", "train_function", "test_function", "predict_function",
}  # fmt: skip
KERAS_PRIVATE = {
    "_loss_tracker", "_inbound_nodes", "_outbound_nodes", "_keras_history", "_keras_mask",
    "_build_shapes_dict", "_inputs_struct", "_outputs_struct", "_functional",
    "_nodes_by_depth", "_operations", "_layers", "_tracker", "_self_tracked_trackables",
    "_compile_config", "_compile_loss", "_compile_metrics", "_metrics", "_jit_compile",
    "_distribute_strategy", "_trainable_variables", "_non_trainable_variables",
    "_called", "_call_signature", "_auto_track_sub_layers", "_eval_epoch_iterator",
}  # fmt: skip
_REFLECTION = {"getattr", "setattr", "hasattr", "delattr"}


def _keras_internals(source: str, filename: str = "<string>") -> list[str]:
    """Where ``source`` touches the training loop or a Keras private attribute: attribute
    access on anything but ``self``/``cls`` (a class may name its own method ``train_step``),
    reflection with the name as a string, or ``"train_step" in vars(model)``-style tests."""
    found = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in TRAINING_LOOP | KERAS_PRIVATE:
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if not own or node.attr in KERAS_PRIVATE:
                found.append(f"{filename}:{node.lineno}: .{node.attr}")
        strings = []
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in _REFLECTION:
            strings = node.args[1:2]
        elif isinstance(node, ast.Subscript):
            strings = [node.slice]
        elif isinstance(node, ast.Compare):
            strings = [node.left, *node.comparators]
        for s in strings:
            if isinstance(s, ast.Constant) and s.value in TRAINING_LOOP | KERAS_PRIVATE:
                found.append(f"{filename}:{node.lineno}: {s.value!r}")
    return found


def test_only_keras_package_touches_training_loop_and_private_attributes():
    found = []
    for module, path in MODULES.items():
        if _area(module) != "_keras":
            found += _keras_internals(path.read_text(), str(path.relative_to(ROOT.parent)))
    assert not found, "go through tfchannelprune._keras (add_train_step_hook ...): " + str(found)


@pytest.mark.parametrize(
    "source",
    [
        "model.train_step = step",
        "del self.model.train_step",
        "model.make_train_function(force=True)",
        "model.train_function = None",
        "getattr(model, '_loss_tracker', None)",
        "if 'train_step' in vars(model): pass",
        "self._keras_history",
        "node = t._keras_history.operation",
    ],
)
def test_training_loop_rule_sees_each_way_of_touching(source):
    assert _keras_internals(source)


def test_training_loop_rule_allows_a_class_its_own_train_step():
    assert not _keras_internals("hook = lambda step: self.train_step\nself.graph._name")
