"""Bad input never yields a wrong model or a passing check (issue 21): one test per row.

Each test failed on the code before issue 21 (the row's "what happens today" is quoted in
its docstring); errors are matched by class name and message so that this file also runs,
and fails, against that code.
"""

import json
import os
import pathlib
import re
import warnings

import keras
import numpy as np
import pytest
import zoo
from keras import layers as L

import tfchannelprune as tcp
from tfchannelprune.cli import main

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def named_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(8, 3, padding="same", name="c1")(inp)))
    x = L.MaxPooling2D()(x)
    x = L.ReLU()(L.BatchNormalization(name="bn2")(L.Conv2D(12, 3, padding="same", name="c2")(x)))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3, name="out")(x), name="named_cnn")


def gated_cnn(seed=0):
    gated = tcp.wrap(named_cnn(seed))
    gated.compile(optimizer="adam", loss=LOSS)
    return gated


def with_nan(x, count=1):
    x = np.array(x, copy=True)
    x.reshape(-1)[:count] = np.nan
    return x


def raises_non_finite(fn, *match):
    with pytest.raises(ValueError) as info:
        fn()
    assert type(info.value).__name__ == "NonFiniteInputError", repr(info.value)
    for m in match:
        assert re.search(m, str(info.value)), str(info.value)
    return str(info.value)


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- 1. NaN pixel, dead channels
def test_nan_pixel_dead_channels_is_an_error(tmp_path, capsys):
    """Today: "32 of 32 prunable channels dead"; the removed model outputs NaN; --output saves
    it."""
    model = named_cnn()
    x = with_nan(zoo.tiny_digits(64)[0])
    raises_non_finite(lambda: tcp.find_dead_channels(model, x), "1 NaN or infinite value",
                      "data")  # fmt: skip
    raises_non_finite(lambda: tcp.remove_dead_channels(model, x), "1 NaN")
    path, npy, out = tmp_path / "m.keras", tmp_path / "x.npy", tmp_path / "small.keras"
    model.save(path)
    np.save(npy, x)
    code, _, err = run_cli(["dead", path, "--data", npy, "--output", out], capsys)
    assert code == 2 and "NaN" in err and not out.exists()


def test_nan_weight_is_not_called_dead():
    model = named_cnn()
    beta = model.get_layer("bn2").beta  # finite data, NaN at the gates: not "dead"
    beta.assign(with_nan(beta.numpy()))
    raises_non_finite(lambda: tcp.find_dead_channels(model, zoo.tiny_digits(32)[0]),
                      "weights")  # fmt: skip


# ---------------------------------------------------------------- 2. NaN in parity
def test_parity_check_fails_on_non_finite(tmp_path):
    """Today: NaN sample inputs or a NaN weight give "parity ok: max abs error 0"."""
    model = named_cnn()
    x = zoo.tiny_digits(16)[0]
    path = tmp_path / "m.tflite"
    raises_non_finite(lambda: tcp.export_tflite(model, path, sample_inputs=with_nan(x, 3)),
                      "sample_inputs", "3 NaN")  # fmt: skip
    raises_non_finite(lambda: tcp.export_tflite(model, path, quantize="int8",
                                                representative_data=with_nan(x)),
                      "representative_data")  # fmt: skip
    assert not path.exists()
    bias = model.get_layer("out").bias
    bias.assign(with_nan(bias.numpy()))
    with pytest.warns(UserWarning, match="Non-finite outputs"):
        report = tcp.export_tflite(model, path, sample_inputs=x)
    assert report.parity_ok is False and "FAILED" in report.summary()


# ---------------------------------------------------------------- 3. renamed plan group
def test_plan_with_a_renamed_group_is_an_error(tmp_path, capsys):
    """Today: exit 0; an unknown name silently switches the plan to matching by position."""
    model = named_cnn()
    gated = tcp.wrap(model)
    tcp.set_kept_channels(gated, {"c1": [0, 2, 4]})
    plan = tmp_path / "plan.json"
    doc = tcp.save_plan(gated, plan)
    assert doc.get("match", "name") == "name"  # the layers have names of their own
    doc["groups"][0]["name"] = "c1_renamed"
    plan.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"'c1_renamed'"):
        tcp.apply_plan(named_cnn(), plan)
    model.save(tmp_path / "m.keras")
    code, _, err = run_cli(["apply-plan", tmp_path / "m.keras", plan, "-o",
                            tmp_path / "s.keras"], capsys)  # fmt: skip
    assert code == 2 and "c1_renamed" in err and not (tmp_path / "s.keras").exists()


# ---------------------------------------------------------------- 4. checkpoints and resume
class Interrupt(Exception):
    pass


class StopAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupt


def _pruning():
    return tcp.ChannelPruning(signal="taylor", target_macs=0.05, channels_per_step=2,
                              verbose=0)  # fmt: skip


def _kept(model):
    return sum(len(v) for v in tcp.get_kept_channels(model).values())


@pytest.mark.parametrize("kind", ["ModelCheckpoint", "BackupAndRestore"])
@pytest.mark.parametrize("order", ["before", "after"])
def test_resume_with_a_checkpoint_callback_in_either_order(tmp_path, kind, order):
    """Today: a checkpoint callback listed before ChannelPruning saves the model before the
    epoch's event, and the resumed run keeps other channels (widths [14, 19] vs [11, 19])."""
    x, y = zoo.tiny_digits(96)
    x, y = x.astype("float32"), y % 3
    epochs, stop = 4, 2

    def checkpoint():
        if kind == "ModelCheckpoint":
            return keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt.keras"))
        return keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))

    def callbacks(pruning, extra=()):
        cbs = [checkpoint(), pruning] if order == "before" else [pruning, checkpoint()]
        return cbs + list(extra)

    warnings.simplefilter("ignore")  # the target is far: each fit ends short of it
    straight = gated_cnn(seed=1)
    straight.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=True,
                 callbacks=[_pruning()])  # fmt: skip
    first = gated_cnn(seed=1)
    with pytest.raises(Interrupt):
        first.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=True,
                  callbacks=callbacks(_pruning(), [StopAt(stop)]))  # fmt: skip
    if kind == "ModelCheckpoint":
        resumed = keras.saving.load_model(tmp_path / "ckpt.keras")
        assert _kept(resumed) == _kept(first)  # the checkpoint holds the pruned model
        start = {"initial_epoch": stop}
    else:
        resumed, start = gated_cnn(seed=1), {}  # a new process: BackupAndRestore restores
    pruning = _pruning()
    resumed.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=True,
                callbacks=callbacks(pruning), **start)  # fmt: skip
    full = 8 + 12
    assert _kept(straight) == full - 2 * epochs  # 2 channels per epoch-end event
    assert _kept(resumed) == _kept(straight), (order, kind)
    assert len(pruning.history) == epochs - stop


# ---------------------------------------------------------------- 5. README quick start
def _quick_start():
    text = README.read_text()
    section = text[text.index("## Quick start"):]
    prose = section[: section.index("```python")]
    code = section[section.index("```python") + len("```python"):]
    return prose, code[: code.index("```")]


def test_readme_quick_start_reaches_its_target_and_says_what_it_does(tmp_path, monkeypatch):
    """Today: 69% of the MACs, not half; the prose says in-step Taylor every 4 steps while
    the code passes calibration data with per-epoch events."""
    prose, code = _quick_start()
    every = re.search(r"every (\d+) (steps|epochs)", prose)
    assert every, prose
    n, unit = every.groups()
    assert f"prune_every={n}" in code.replace(" ", "")
    assert ('frequency="step"' in code) == (unit == "steps")
    epochs = re.search(r"(\d+) epochs", prose)
    assert epochs and f"epochs={epochs.group(1)}" in code.replace(" ", "")
    if "no calibration" in prose or "training steps" in prose:
        assert "ChannelPruning((x" not in code and "ChannelPruning(x" not in code
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code.replace("assert pruning.done", "pass"), "README", "exec"), namespace)
    assert tcp.count_macs(namespace["small"]) <= 0.5 * tcp.count_macs(namespace["model"])


# ---------------------------------------------------------------- 6. target not reached
def test_target_not_reached_warns_and_history_says_so():
    """Today: training ends at 0.647 with done=False, silently."""
    x, y = zoo.tiny_digits(64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(32, 3, padding="same", use_bias=False), L.BatchNormalization(), L.ReLU(),
        L.Conv2D(64, 3, padding="same", use_bias=False), L.BatchNormalization(), L.ReLU(),
        L.GlobalAveragePooling2D(), L.Dense(10),
    ])  # fmt: skip
    gated = tcp.wrap(model)
    gated.compile(optimizer="adam", loss=LOSS)
    pruning = tcp.ChannelPruning(signal="taylor", target_macs=0.01, verbose=0)
    with pytest.warns(UserWarning) as record:
        gated.fit(x, y, epochs=2, verbose=0, callbacks=[pruning])
    texts = [str(w.message) for w in record if "target" in str(w.message)]
    assert texts, [str(w.message) for w in record]
    text = texts[0]
    assert "target_macs=0.01" in text and "epochs" in text and "channels_per_step" in text
    assert re.search(r"stopped at MACs 0\.\d+", text)
    assert type(record[0].message).__name__ == "TargetNotReachedWarning"
    assert pruning.done is False and pruning.history[-1]["warning"] == text


# ---------------------------------------------------------------- 7. ignored_layers="c1"
def test_ignored_layers_takes_one_name():
    """Today: "c1" is read as the layer names ['1', 'c']."""
    x, y = zoo.tiny_digits(64)
    gated = gated_cnn()
    pruning = tcp.ChannelPruning(signal="l1_weight", target_macs=0.6, channels_per_step=None,
                                 ignored_layers="c1", verbose=0)  # fmt: skip
    assert pruning.config.ignored_layers == ("c1",)
    gated.fit(x, y % 3, epochs=1, verbose=0, callbacks=[pruning])
    kept = tcp.get_kept_channels(gated)
    assert len(kept["c1"]) == 8 and len(kept["c2"]) < 12
    dynamic = tcp.DynamicChannelExecution(active_fraction=0.5, ignored_layers="c1")
    assert dynamic.ignored_layers == ("c1",)


# ---------------------------------------------------------------- 8. dead: measured change
def test_dead_reports_the_measured_output_change(tmp_path, capsys):
    """Today: "with no accuracy change" while outputs moved 1.4e-3 of their scale."""
    inp = keras.Input((12, 12, 3))
    h = L.ReLU()(L.Conv2D(6, 3, padding="same", name="c1")(inp))
    model = zoo.randomize(keras.Model(inp, L.Conv2D(4, 3, padding="same", name="c2")(h)))
    kernel, bias = model.get_layer("c1").kernel, model.get_layer("c1").bias
    k, b = kernel.numpy(), bias.numpy()
    k[..., 1], b[1] = 0.0, 0.9  # channel 1 is the constant 0.9: dead
    kernel.assign(k)
    bias.assign(b)
    x = zoo.sample_input(model, batch=32)
    path, npy, out = tmp_path / "m.keras", tmp_path / "x.npy", tmp_path / "small.keras"
    model.save(path)
    np.save(npy, x)
    code, text, _ = run_cli(["dead", path, "--data", npy, "--output", out], capsys)
    assert code == 0 and "no accuracy change" not in text
    small = keras.saving.load_model(out)
    a, s = np.asarray(model(x)), np.asarray(small(x))
    change = float(np.max(np.abs(a - s)) / np.max(np.abs(a)))
    assert change > 1e-4  # the border taps of the 'same' conv
    shown = float(re.search(r"outputs changed by ([\d.e+-]+) of their scale", text).group(1))
    assert shown == pytest.approx(change, rel=0.06)


# ---------------------------------------------------------------- 9. corrupt .keras
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_keras_file_is_named_invalid(tmp_path, capsys, damage):
    """Today: "File not found ... Please ensure the file is an accessible .keras zip file"
    although the file exists."""
    path = tmp_path / "m.keras"
    named_cnn().save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a model" * 50)
    for argv in (["report", path], ["dead", path, "--data", path],
                 ["export", path, "-o", tmp_path / "m.tflite"]):  # fmt: skip
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and "not a valid .keras file" in err and str(path) in err, err


# ---------------------------------------------------------------- 10. channels_first
def test_channels_first_model_says_nothing_is_prunable():
    """Today: fit says the model "has no ChannelGate layers. Call tfchannelprune.wrap(model)"
    although it was wrapped."""
    keras.config.set_image_data_format("channels_first")
    try:
        model = keras.Sequential([keras.Input((1, 8, 8)), L.Conv2D(6, 3, padding="same"),
                                  L.ReLU(), L.Conv2D(5, 3), L.GlobalAveragePooling2D(),
                                  L.Dense(3)])  # fmt: skip
    finally:
        keras.config.set_image_data_format("channels_last")
    gated = tcp.wrap(model)
    gated.compile(optimizer="sgd", loss=LOSS)
    x, y = np.zeros((8, 1, 8, 8), "float32"), np.zeros(8, "int32")
    pruning = tcp.ChannelPruning(signal="l1_weight", target_macs=0.5)
    with pytest.raises(ValueError, match="nothing here is prunable: channels_first") as info:
        gated.fit(x, y, epochs=1, verbose=0, callbacks=[pruning])
    assert "Call `gated = tcp" not in str(info.value) and "channels_last" in str(info.value)


# ---------------------------------------------------------------- 11. wrap(None)
@pytest.mark.parametrize("thing", [None, "x.keras"])
def test_wrap_and_graph_reject_a_non_model(thing):
    """Today: AttributeError: 'NoneType' object has no attribute 'layers'."""
    for fn in (tcp.wrap, tcp.ChannelGraph):
        with pytest.raises(TypeError, match=r"Expected a keras\.Model: a built Functional"):
            fn(thing)
    with pytest.raises(TypeError, match=r"load it first: keras\.saving\.load_model"):
        tcp.wrap("x.keras")


# ---------------------------------------------------------------- 12. output paths
def _unwritable_dir(tmp_path):
    if os.geteuid() == 0:  # root writes through permissions; /sys refuses new files
        return pathlib.Path("/sys")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    return locked


def test_output_paths_are_checked_before_the_work(tmp_path, capsys, monkeypatch):
    """Today: a raw [Errno 2] / [Errno 13] naming a temp file, after the work is done."""
    import tfchannelprune.cli.dead as cli_dead
    import tfchannelprune.cli.plan as cli_plan
    import tfchannelprune.deploy.export as export

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the output path was checked")

    model = named_cnn()
    gated = tcp.wrap(model)
    missing = tmp_path / "missing" / "x.keras"
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing" / "p.json"))):
        tcp.save_plan(gated, tmp_path / "missing" / "p.json")
    plan, path, npy = tmp_path / "plan.json", tmp_path / "m.keras", tmp_path / "x.npy"
    tcp.save_plan(gated, plan)
    model.save(path)
    np.save(npy, zoo.tiny_digits(16)[0])
    monkeypatch.setattr(cli_plan, "apply_plan", no_work)
    monkeypatch.setattr(cli_dead, "find_dead_channels", no_work)
    monkeypatch.setattr(export, "convert", no_work)
    for argv in (["apply-plan", path, plan, "-o", missing],
                 ["dead", path, "--data", npy, "--output", missing]):  # fmt: skip
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and str(missing) in err and ".tmp" not in err, err
    target = _unwritable_dir(tmp_path) / "m.tflite"
    with pytest.raises(PermissionError, match=re.escape(str(target))):
        tcp.export_tflite(model, target)
    code, _, err = run_cli(["export", path, "-o", target], capsys)
    assert code == 2 and str(target) in err and "not writable" in err


# ---------------------------------------------------------------- 13. NaN loss in-step
def test_nan_loss_during_in_step_taylor_names_taylor_and_the_data():
    """Today: the error names the internal id mask_delta|abs,mean_n|none and not the data."""
    x, y = zoo.tiny_digits(64)
    x = with_nan(x, 5)
    gated = gated_cnn()
    pruning = tcp.ChannelPruning(signal="taylor", target_macs=0.5, verbose=0)
    message = raises_non_finite(
        lambda: gated.fit(x, y % 3, epochs=1, verbose=0, callbacks=[pruning]),
        "'taylor'", "data", "learning rate",
    )
    assert "mask_delta" not in message


# ---------------------------------------------------------------- calibration data
def test_nan_in_calibration_data_is_an_error():
    x, y = zoo.tiny_digits(32)
    model = named_cnn()
    raises_non_finite(lambda: tcp.collect_saliency(model, (with_nan(x, 2), y % 3), LOSS),
                      "calibration data x", "2 NaN")  # fmt: skip


def test_non_finite_count_ignores_integer_arrays():
    from tfchannelprune.core.checks import count_non_finite

    assert count_non_finite({"a": np.array([1.0, np.inf, np.nan]), "b": np.arange(3)}) == (2, 3)


def test_nan_in_mean_replacement_data_is_an_error():
    x = with_nan(zoo.tiny_digits(16)[0], 4)
    raises_non_finite(lambda: tcp.gate_input_means(named_cnn(), x), "gate_input_means data",
                      "4 NaN")  # fmt: skip


# ---------------------------------------------------------------- prune()'s fine_tune_data
def _prune_spy_scoring(monkeypatch):
    """Count prune()'s scoring calls: the checks below must come before any of them."""
    from tfchannelprune.prune import loop

    calls = []
    original = loop.score_all
    monkeypatch.setattr(loop, "score_all", lambda *a: calls.append(1) or original(*a))
    return calls


@pytest.mark.parametrize("scoring", ["calibration", "fine_tuning"])
def test_bad_fine_tune_data_is_an_error_before_round_one(monkeypatch, scoring):
    # NaN fine-tuning data used to fail in round 2's scores ("the loss is not finite on this
    # batch" or "the criterion accumulated in the training steps is NaN"), empty data pruned
    # without a word, and a wrong shape failed in round 1's fit after its scoring
    x, y = zoo.tiny_digits(32)
    y = y % 3
    calls = _prune_spy_scoring(monkeypatch)
    prune = lambda ft: tcp.prune(named_cnn(), (x, y), loss=LOSS, target_macs=0.5,  # noqa: E731
                                 rounds=2, fine_tune_data=ft, scoring=scoring, verbose=0)
    raises_non_finite(lambda: prune((with_nan(x, 3), y)), "fine_tune_data", "3 NaN")
    with pytest.raises(ValueError, match="fine_tune_data is empty"):
        prune((x[:0], y[:0]))
    with pytest.raises(ValueError, match="same number of examples"):
        prune((x, y[:5]))
    with pytest.raises(ValueError, match=r"does not fit the model.*\(4, 8, 1\).*\(8, 8, 1\)"):
        prune((x[:, :4], y))
    with pytest.raises(ValueError, match="scoring must be"):
        tcp.prune(named_cnn(), (x, y), loss=LOSS, target_macs=0.5, scoring="steps", verbose=0)
    assert not calls
