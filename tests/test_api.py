"""The public API holds together: one calling convention, and ``__all__`` == the documented API.

The convention (docs/api.md) is read from the signatures of every exported callable:

* an entry point takes ``model`` first, then at most one more positional argument (``data``,
  a ``path`` or a ``plan``), and every option by keyword only;
* a callback (it gets its model from ``fit``) takes at most ``data`` positionally;
* a shared option name (``loss``, ``signal``, ``batch_size``, ``steps``, ``training``,
  ``min_channels``, ``ignored_layers``, ``verbose``) has its one default everywhere it appears,
  value types and criteria included, and is keyword-only in entry points and callbacks;
* former names (``calibration_steps``) appear nowhere.

And the documentation: every ``tcp.X`` / ``tfchannelprune.X`` written in README.md or docs/ is
exported, no code block imports a name from an internal submodule, and every exported name is
documented (docs/api.md lists them all).
"""

from __future__ import annotations

import dataclasses
import inspect
import pathlib
import re
import warnings

import keras
import numpy as np
import pytest

import tfchannelprune as tcp
from tfchannelprune.core.convention import DEFAULTS, keyword_only

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Entry points: model first. The second positional parameter, if any, is one of SECOND.
ENTRY_POINTS = [
    "ChannelGraph", "SaliencyAccumulator", "apply_plan", "collect_saliency", "compact",
    "count_macs", "count_params", "export_tflite", "find_dead_channels", "gate_input_means",
    "get_kept_channels", "marginal_macs", "oracle_loss_change", "prune", "remove_dead_channels",
    "save_plan", "set_kept_channels", "strip", "summary", "wrap",
]  # fmt: skip
SECOND = {"data", "path", "plan"}
CALLBACKS = ["ChannelPruning", "DeadChannelMonitor", "DynamicChannelExecution"]
# Callables that take a ChannelGraph (building blocks) or a file, not a model: the names of
# their leading positional parameters are fixed here, options after them keyword-only.
LEADING = {
    "select_channels": ("graph", "scores", "masks", "config"),
    "mean_replacement_shift": ("graph", "masks", "means"),
    "benchmark_tflite": ("path",),
    "compare": ("before", "after"),
}
RETIRED = {"calibration_steps"}
# `signals` (several criteria, results keyed by criterion) exists only beside `signal` here.
PLURAL_SIGNALS = {"collect_saliency", "SaliencyAccumulator"}
# Public namespaces a doc may import from (everything else is imported from `tfchannelprune`).
NAMESPACES = ("tfchannelprune.datasets", "tfchannelprune.gaze")
SUBPACKAGES = {
    "core", "saliency", "prune", "dead", "deploy", "dynamic", "datasets", "gaze", "cli",
    "_keras", "errors", "signals",
}  # fmt: skip

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _parameters(name: str) -> list[inspect.Parameter]:
    obj = getattr(tcp, name)
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = list(inspect.signature(target).parameters.values())
    if inspect.isclass(obj) and params and params[0].name == "self":
        params = params[1:]
    return [p for p in params if not p.name.startswith("_")]


def _positional(name: str) -> list[str]:
    return [p.name for p in _parameters(name) if p.kind in _POSITIONAL]


def _callables() -> list[str]:
    return [
        n for n in tcp.__all__
        if callable(getattr(tcp, n)) and not inspect.ismodule(getattr(tcp, n))
        and not (inspect.isclass(getattr(tcp, n)) and issubclass(getattr(tcp, n), Exception))
    ]  # fmt: skip


# ------------------------------------------------------------------------- the convention
def test_the_classified_names_are_exported():
    named = [*ENTRY_POINTS, *CALLBACKS, *LEADING]
    assert [n for n in named if n not in tcp.__all__] == []


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_point_takes_model_then_data_then_keywords(name):
    positional = _positional(name)
    assert positional[:1] == ["model"], f"{name}{inspect.signature(getattr(tcp, name))}"
    assert len(positional) <= 2 and set(positional[1:]) <= SECOND, (
        f"{name}: positional {positional}; options after model and {sorted(SECOND)} are "
        "keyword-only (docs/api.md)"
    )


@pytest.mark.parametrize("name", CALLBACKS)
def test_callback_takes_at_most_data_positionally(name):
    assert _positional(name) in ([], ["data"]), f"{name}: positional {_positional(name)}"


@pytest.mark.parametrize("name", sorted(LEADING))
def test_building_block_takes_its_subject_then_keywords(name):
    assert tuple(_positional(name)) == LEADING[name]


@pytest.mark.parametrize("name", _callables())
def test_shared_option_names_have_one_default(name):
    wrong = []
    for p in _parameters(name):
        if p.name in DEFAULTS and p.default is not inspect.Parameter.empty:
            if p.default != DEFAULTS[p.name]:
                wrong.append(f"{p.name}={p.default!r} (the convention: {DEFAULTS[p.name]!r})")
    assert not wrong, f"{name}: {wrong}"


@pytest.mark.parametrize("name", [*ENTRY_POINTS, *CALLBACKS])
def test_shared_options_are_keyword_only(name):
    params = _parameters(name)
    loose = [p.name for p in params if p.name in DEFAULTS and p.kind in _POSITIONAL]
    assert not loose, f"{name}: {loose} must be keyword-only"
    names = {p.name for p in params}
    assert not names & RETIRED, f"{name} still takes {names & RETIRED}"
    assert "signals" not in names or name in PLURAL_SIGNALS


def test_every_entry_point_that_prints_takes_verbose():
    for name in ("ChannelPruning", "prune", "DeadChannelMonitor"):
        assert "verbose" in {p.name for p in _parameters(name)}, name


def test_selection_options_are_spelled_alike():
    for name in ("ChannelPruning", "prune", "DynamicChannelExecution"):
        names = {p.name for p in _parameters(name)}
        assert {"min_channels", "ignored_layers"} <= names, name
    for name in ("ChannelPruning", "prune", "collect_saliency", "find_dead_channels",
                 "gate_input_means", "remove_dead_channels"):  # fmt: skip
        assert {"batch_size", "steps"} <= {p.name for p in _parameters(name)}, name


def test_the_convention_test_catches_a_deviation():
    def bad(model, data, loss=None, batch_size=64):  # loss positional, another default
        return model

    params = inspect.signature(bad).parameters.values()
    assert [p.name for p in params if p.kind in _POSITIONAL][2:] == ["loss", "batch_size"]
    assert [p.name for p in params if p.name in DEFAULTS and p.default != DEFAULTS[p.name]]


# ------------------------------------------------------------------- former spellings
def test_former_positional_call_maps_with_a_deprecation_warning():
    @keyword_only("loss", "signal")
    def entry(model, data, *, loss=None, signal="taylor"):
        return model, data, loss, signal

    with pytest.warns(DeprecationWarning, match=r"entry\(\.\.\., loss=\.\.\., signal=\.\.\.\)"):
        assert entry(1, 2, "mse", "fisher") == (1, 2, "mse", "fisher")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert entry(1, 2, loss="mse") == (1, 2, "mse", "taylor")  # the new spelling: silent
    with pytest.raises(TypeError, match="takes 2 positional"):
        entry(1, 2, "mse", "fisher", "extra")
    with pytest.raises(TypeError, match="multiple values"):
        entry(1, 2, "mse", loss="mse")
    assert list(inspect.signature(entry).parameters) == ["model", "data", "loss", "signal"]


def test_library_entry_points_accept_their_former_spellings():
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.ReLU(), keras.layers.Flatten(),
                              keras.layers.Dense(2)])  # fmt: skip
    with pytest.warns(DeprecationWarning, match="per_layer=..."):
        assert tcp.count_macs(model, True) == tcp.count_macs(model, per_layer=True)
    with pytest.warns(DeprecationWarning, match="steps="):
        pruning = tcp.ChannelPruning(None, None, "l1_weight", target_macs=0.5,
                                     calibration_steps=3)  # fmt: skip
    assert pruning.steps == 3 and pruning.signal == "l1_weight"
    with pytest.warns(DeprecationWarning, match="from_paper.*loss="):
        paper = tcp.ChannelPruning.from_paper("theis2018", None, "mse", target_macs=0.5)
    assert paper.loss == "mse" and paper.signal == "fisher"
    with pytest.raises(TypeError, match="takes 2 positional"):
        tcp.ChannelPruning.from_paper("theis2018", None, "mse", "extra", target_macs=0.5)
    with pytest.warns(DeprecationWarning):
        monitor = tcp.DeadChannelMonitor(1e-3)
    assert monitor.tol == 1e-3 and monitor.verbose == DEFAULTS["verbose"]


def test_return_shape_follows_the_keyword_not_the_value():
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2)])  # fmt: skip
    one = tcp.collect_saliency(model, None, signal="l1_weight")
    several = tcp.collect_saliency(model, None, signals=["l1_weight"])
    assert isinstance(next(iter(one.values())), np.ndarray)
    assert list(several) == ["l1_weight"]
    np.testing.assert_array_equal(several["l1_weight"][next(iter(one))], next(iter(one.values())))
    with pytest.raises(TypeError, match="signals="):
        tcp.collect_saliency(model, None, signal=["l1_weight", "l2_weight"])
    with pytest.raises(TypeError, match="not both"):
        tcp.collect_saliency(model, None, signal="l1_weight", signals=["l2_weight"])
    gated = tcp.wrap(model)
    x, y = rng.normal(size=(4, 6, 6, 1)).astype("float32"), np.array([0, 1, 0, 1])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    acc = tcp.SaliencyAccumulator(gated, loss=loss, signals=["taylor"])
    acc.update(x, y)
    assert list(acc.result()) == ["taylor"]


# --------------------------------------------------------------------- __all__ vs the docs
def _doc_texts() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text() for p in DOCS}


def _written_names(text: str) -> set[str]:
    """Top-level names written as ``tcp.X``, or ``tfchannelprune.X`` when that is not a module
    path (``tfchannelprune.core.batches`` names a module, not an exported name)."""
    names = set(re.findall(r"\btcp\.([A-Za-z_]\w*)", text))
    names |= set(re.findall(r"\btfchannelprune\.([A-Za-z_]\w*)(?![\w.])", text)) - {
        ns.split(".")[1] for ns in NAMESPACES
    }
    names |= {n for n in re.findall(r"\btfchannelprune\.([A-Za-z_]\w*)\.", text)
              if n not in SUBPACKAGES}  # fmt: skip
    return names - {"__all__", "__version__"}


def _imports(text: str) -> list[tuple[str, list[str]]]:
    found = []
    for module, names in re.findall(r"^\s*from (tfchannelprune[\w.]*) import \(?([^)\n]+)",
                                    text, re.M):  # fmt: skip
        found.append((module, [n.strip().split(" as ")[0] for n in names.split(",") if n.strip()]))
    return found


def test_every_documented_name_is_exported():
    missing = {}
    for path, text in _doc_texts().items():
        names = _written_names(text)
        names |= {n for m, ns in _imports(text) if m == "tfchannelprune" for n in ns}
        names -= {"gaze"}  # the public namespace, imported as `from tfchannelprune import gaze`
        absent = sorted(n for n in names if n not in tcp.__all__)
        if absent:
            missing[path] = absent
    assert not missing, f"documented as tcp.X but not in tfchannelprune.__all__: {missing}"


def test_docs_import_only_from_the_package_or_its_public_namespaces():
    internal = [
        f"{path}: from {module} import {', '.join(names)}"
        for path, text in _doc_texts().items()
        for module, names in _imports(text)
        if module != "tfchannelprune" and not module.startswith(NAMESPACES)
    ]
    assert not internal, f"import these from tfchannelprune (export them): {internal}"


def test_every_exported_name_is_documented():
    text = "\n".join(_doc_texts().values())
    written = _written_names(text) | {n for m, ns in _imports(text) if m == "tfchannelprune"
                                      for n in ns}  # fmt: skip
    undocumented = sorted(n for n in tcp.__all__ if n not in written)
    assert not undocumented, f"exported but documented nowhere (add to docs/api.md): {undocumented}"


def test_api_page_lists_every_exported_name():
    listed = _written_names((REPO / "docs" / "api.md").read_text())
    assert sorted(set(tcp.__all__) - listed) == []


def test_the_docs_checks_can_fail():
    assert _written_names("`tcp.not_a_name(model)` and `tfchannelprune.core.x`") == {
        "not_a_name"
    }
    assert _written_names("`tfchannelprune.prune.select`, `tcp.prune(`") == {"prune"}
    assert _imports("from tfchannelprune.prune.select import select_channels\n") == [
        ("tfchannelprune.prune.select", ["select_channels"])
    ]


def test_value_types_are_plain_data():
    for name in ("ChannelGroup", "DeadReport", "PruneResult", "SelectionConfig", "WeightAxis"):
        assert dataclasses.is_dataclass(getattr(tcp, name)), name
