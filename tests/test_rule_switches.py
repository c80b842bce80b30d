"""No feature branches on a rule or layer class: knowledge of a layer type lives in its rule.

The library source outside ``core/rules`` (where the rules live) and ``_keras`` (Keras
internals) is read with ``ast``; any ``isinstance`` / ``issubclass`` / ``type(x) is ...``
test against a rule class (a name ending in ``Rule``) or a ``keras.layers`` class (other than
the generic ``Layer`` / ``InputLayer``), or a tuple of such classes, fails the test.
"""

from __future__ import annotations

import ast
import pathlib

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "tfchannelprune"
EXEMPT = ("core/rules/", "_keras/")
GENERIC = {"Layer", "InputLayer", "Input"}


def _name(node) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _is_switch_target(node) -> bool:
    """A rule class or a specific keras.layers class (or a tuple / list of them)."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_is_switch_target(e) for e in node.elts)
    name = _name(node)
    if name is None:
        return False
    if name.endswith("Rule") or name.endswith("_RULES"):
        return True
    return name not in GENERIC and isinstance(getattr(keras.layers, name, None), type)


def _is_type_call(node) -> bool:
    return isinstance(node, ast.Call) and _name(node.func) == "type" and len(node.args) == 1


def switches(source: str) -> list[str]:
    """``line: code`` of every class switch in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        hit = False
        if isinstance(node, ast.Call) and _name(node.func) in ("isinstance", "issubclass"):
            hit = len(node.args) == 2 and _is_switch_target(node.args[1])
        elif isinstance(node, ast.Compare) and _is_type_call(node.left):
            hit = any(_is_switch_target(c) for c in node.comparators)
        if hit:
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def _library_files() -> list[pathlib.Path]:
    return [
        p
        for p in sorted(ROOT.rglob("*.py"))
        if not p.relative_to(ROOT).as_posix().startswith(EXEMPT)
    ]


@pytest.mark.parametrize(
    "code",
    [
        "isinstance(rule, rules.ProducerRule)",
        "type(rule) is rules.Rule",
        "type(op) in (L.Conv2D, L.Conv3D)",
        "isinstance(layer, keras.layers.BatchNormalization)",
        "type(r) in PASS_RULES",
        "isinstance(rule, (rules.DepthwiseRule, rules.SeparableRule))",
    ],
)
def test_detects_switches(code):
    assert switches(code)


@pytest.mark.parametrize(
    "code",
    ["isinstance(op, keras.layers.Layer)", "isinstance(m, keras.Model)", "rule.is_gate", "rules.Rule()"],
)
def test_allows_generic_checks(code):
    assert not switches(code)


def test_no_rule_or_layer_class_switch_outside_the_rules():
    files = _library_files()
    assert len(files) > 30
    found = {
        p.relative_to(ROOT).as_posix(): hits
        for p in files
        if (hits := switches(p.read_text()))
    }
    assert not found, found
