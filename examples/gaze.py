"""FastGaze on synthetic scenes: distil, Fisher-prune with the cost term, plot, export to LiteRT.

Theis et al. 2018 ("Faster gaze prediction with dense networks and Fisher pruning"): a teacher
gaze model is trained on fixations, a small student is distilled from it (0.1 fixations + 0.9
teacher), and the student is Fisher-pruned one channel at a time with the MACs cost term
(beta="auto" and a fixed beta), fine-tuned on the distillation targets in between.

Writes to --out:
  pareto.png                 information gain and AUC-Judd against MACs (teacher, student,
                             pruned students at several MACs levels, one line per beta)
  predictions.png            test images, their true fixation density, and the predictions
  gaze_pruned.tflite/.json   the chosen pruned student, float32, with its sidecar for an app
  gaze_pruned_int8.tflite/.json   the same, full int8
  teacher/student/gaze_pruned .keras, results.json

The chosen student is the cheapest whose validation AUC-Judd is within 0.5 points of the
teacher's. Usage: python examples/gaze.py [--out saved_models/gaze] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tfchannelprune import count_macs, gaze
from tfchannelprune.gaze.experiment import (  # noqa: E402
    ExperimentConfig,
    cheapest_within,
    run_experiment,
)

COLUMNS = ("model", "beta", "macs", "teacher_ratio", "auc_judd", "val_auc_judd",
           "shuffled_auc", "information_gain", "explained_information_gain", "nss")  # fmt: skip


def print_table(rows) -> None:
    print(" | ".join(f"{c:>12.12s}" for c in COLUMNS))
    for row in rows:
        cells = []
        for c in COLUMNS:
            v = row[c]
            cells.append(f"{v:>12,d}" if isinstance(v, int) else
                         f"{v:>12.4f}" if isinstance(v, float) else f"{v!s:>12.12s}")  # fmt: skip
        print(" | ".join(cells))


def plot_pareto(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in (
        (axes[0], "information_gain", "information gain over centre bias (bits/fixation)"),
        (axes[1], "auc_judd", "AUC-Judd"),
    ):
        for beta in dict.fromkeys(r["beta"] for r in rows if r["model"] == "pruned"):
            line = [r for r in rows if r["model"] == "pruned" and r["beta"] == beta]
            line = [r for r in rows if r["model"] == "student"] + line
            ax.plot([r["macs"] for r in line], [r[key] for r in line], "o-",
                    label=f"pruned student, beta={beta}")  # fmt: skip
        for name, marker in (("teacher", "s"), ("student", "D")):
            r = next(r for r in rows if r["model"] == name)
            ax.plot(r["macs"], r[key], marker, markersize=9, label=name)
        teacher = next(r for r in rows if r["model"] == "teacher")
        if key == "auc_judd":
            ax.axhline(teacher[key] - 0.005, color="grey", ls=":", label="teacher - 0.5 points")
        ax.axvline(teacher["macs"] / 10, color="grey", ls="--", label="teacher MACs / 10")
        ax.set_xscale("log")
        ax.set_xlabel("MACs per image")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    gold = rows[0]["gold_information_gain"]
    axes[0].axhline(gold, color="k", ls="-.", label=f"gold standard ({gold:.2f})")
    axes[0].legend(fontsize=7)
    fig.suptitle("Fisher pruning with the cost term (held-out images)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_predictions(result, chosen, path: str, n: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = result.test
    models = [("teacher", result.teacher), ("student", result.student), ("pruned", chosen)]
    preds = {name: np.exp(m.predict(test.images[:n], verbose=0)) for name, m in models}
    titles = {name: f"{name}, {count_macs(m) / 1e6:.2f} M MACs" for name, m in models}
    fig, axes = plt.subplots(n, 5, figsize=(12, 2.6 * n), squeeze=False)
    for i in range(n):
        fix = test.fixations_of(i)
        panels = [("image + fixations", test.images[i]), ("true density", test.densities[i])]
        panels += [(titles[name], preds[name][i]) for name, _ in models]
        for ax, (title, img) in zip(axes[i], panels, strict=True):
            ax.imshow(img, cmap=None if img.ndim == 3 else "magma")
            if title.startswith("image"):
                ax.scatter(fix[:, 1], fix[:, 0], s=6, c="cyan")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def export(result, chosen_row, model, out: str) -> dict:
    c = result.config
    cb = {"source": f"pooled fixations of the {c.n_train} training images, blurred",
          "sigma": c.centre_bias_sigma, "sigma_unit": "fraction of min(H, W)",
          "uniform_weight": c.uniform_weight}  # fmt: skip
    keys = ("auc_judd", "shuffled_auc", "information_gain", "explained_information_gain", "nss")
    scores = {k: chosen_row[k] for k in keys} | {"split": "held-out synthetic test images"}
    reports = {}
    for name, quantize in (("gaze_pruned", None), ("gaze_pruned_int8", "int8")):
        done = gaze.export_gaze(
            model, os.path.join(out, f"{name}.tflite"), quantize=quantize,
            representative_data=result.train.images[:200] if quantize else None,
            sample_inputs=result.test.images[:32], centre_bias=cb, metrics=scores,
        )  # fmt: skip
        print(done.report.summary())
        print(f"  {done.sidecar}: max |logsumexp| over pixels {done.max_abs_logsumexp:.2e}")
        reports[name] = done.metadata["checks"]
    return reports


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("saved_models", "gaze"))
    parser.add_argument("--quick", action="store_true", help="tiny settings (tests)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    config = ExperimentConfig.quick() if args.quick else ExperimentConfig()
    result = run_experiment(config)
    print_table(result.rows)
    chosen_row = cheapest_within(result.rows)
    index = [r for r in result.rows if r["model"] == "pruned"].index(chosen_row)
    chosen = [p for path in result.pruned.values() for p in path][index].model
    print(f"chosen: beta={chosen_row['beta']}, {chosen_row['macs']:,} MACs "
          f"({chosen_row['teacher_ratio']:.1f}x fewer than the teacher)")  # fmt: skip
    plot_pareto(result.rows, os.path.join(args.out, "pareto.png"))
    plot_predictions(result, chosen, os.path.join(args.out, "predictions.png"))
    checks = export(result, chosen_row, chosen, args.out)
    for name, model in (("teacher", result.teacher), ("student", result.student),
                        ("gaze_pruned", chosen)):  # fmt: skip
        model.save(os.path.join(args.out, f"{name}.keras"))
    summary = {"rows": result.rows, "chosen": chosen_row, "export_checks": checks,
               "timings_s": result.timings}  # fmt: skip
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    print(f"wrote {args.out}/pareto.png, predictions.png, gaze_pruned(.tflite|_int8.tflite|.json)")
    return summary


if __name__ == "__main__":
    main()
